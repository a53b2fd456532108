from django.apps import AppConfig
from django.conf import settings

from accounts import checks  # noqa: F401  (registers the startup checks)
from accounts.entra.http import pin_library_session
from accounts.views import entra_admin_login


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        pin_library_session()
        if settings.ENTRA_MODE:
            from django.contrib import admin

            # Deliberately replaces the bound method on this one site (same signature);
            # mypy refuses any assignment to a method, so the check is waived here only.
            admin.site.login = entra_admin_login  # type: ignore[method-assign]
