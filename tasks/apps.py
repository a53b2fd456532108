from django.apps import AppConfig

from tasks.auth.redaction import install_daphne_access_log_redaction


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Task status"

    def ready(self) -> None:
        # daphne's access log names every URI, tokens and document links included.
        install_daphne_access_log_redaction()
