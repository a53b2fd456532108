from django.apps import AppConfig
from django.conf import settings


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tasks.auth.redaction import install_daphne_access_log_redaction

        from . import checks  # noqa: F401  (registers the startup checks)
        from .http import pin_library_session

        pin_library_session()
        install_daphne_access_log_redaction()
        if settings.ENTRA_MODE:
            from django.contrib import admin

            from .views import entra_admin_login

            admin.site.login = entra_admin_login
