from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Failure alerts: the tracker (tasks) says a task ended; operations enqueues
        # the alert. tasks never imports operations.
        from tasks.signals import task_finished

        from .alerts import on_task_finished

        task_finished.connect(on_task_finished, dispatch_uid="operations.alerts")
