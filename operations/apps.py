from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"

    def ready(self) -> None:
        # The doors of tasks (REST launch and cancel, the admin, the monitor) reach the
        # jobs through the launcher operations registers; tasks never imports operations.
        from tasks import launcher

        from . import schema  # noqa: F401  (the launch body's per-operation schema)
        from .launcher import OperationsLauncher

        launcher.register(OperationsLauncher())
        # Failure alerts: the tracker says a task ended (tasks.signals); operations
        # enqueues the alert.
        from tasks.signals import task_finished

        from .alerts import on_task_finished

        task_finished.connect(on_task_finished, dispatch_uid="operations.alerts")
        # "Notify me when it ends" (operations/notify.py): the same signal, any final status.
        from .notify import on_task_finished as notify_on_finished

        task_finished.connect(notify_on_finished, dispatch_uid="operations.notify")
