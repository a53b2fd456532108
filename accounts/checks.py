"""Startup checks: an Entra ID configuration that cannot accept any token is an error."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def entra_settings(app_configs: Any = None, **kwargs: Any) -> list:
    if not settings.ENTRA_MODE:
        return []
    problems: list = []
    if not settings.AZURE_CLIENT_ID:
        problems.append(
            Error(
                "AZURE_TENANT_ID is set but AZURE_CLIENT_ID is not: no token could be accepted.",
                hint="Set AZURE_CLIENT_ID to the application (client) id of the API.",
                id="accounts.E001",
            )
        )
    if settings.AZURE_CA_BUNDLE and not _readable(settings.AZURE_CA_BUNDLE):
        problems.append(
            Error(
                f"AZURE_CA_BUNDLE {settings.AZURE_CA_BUNDLE!r} is not a readable file.",
                id="accounts.E002",
            )
        )
    if not settings.AZURE_CLIENT_SECRET:
        problems.append(
            Warning(
                "AZURE_CLIENT_SECRET is not set: the staff pages' Entra ID sign-in "
                "(authorization code flow) needs it; bearer tokens work without it.",
                id="accounts.W001",
            )
        )
    return problems


def _readable(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False
