from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Failure alerts: the tracker says a task ended (tasks.signals); operations
        # enqueues the alert. The writing side of tasks (tracker, models, live path)
        # never imports operations; only its doors (views, pages, admin) do.
        from tasks.signals import task_finished

        from .alerts import on_task_finished

        task_finished.connect(on_task_finished, dispatch_uid="operations.alerts")
        # "Notify me when it ends" (operations/notify.py): the same signal, any final status.
        from .notify import on_task_finished as notify_on_finished

        task_finished.connect(notify_on_finished, dispatch_uid="operations.notify")
