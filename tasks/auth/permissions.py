"""Authorisation rules shared by REST views, the WebSocket consumer and the pages."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.permissions import BasePermission

from .identity import Identity


def can_read(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.is_active)


def can_run(user: Any, identity: Identity | None = None) -> bool:
    """Launch and cancel: staff, or holders of the runner role.

    With an Entra ID token in hand its roles decide, not what an earlier token
    left in the user's groups, so a role removed in Entra ID is gone with the
    next token even while an older one is still valid. Otherwise (local mode,
    the staff pages' session) the role is a group of that name.
    """
    if not can_read(user):
        return False
    if identity is not None and settings.ENTRA_MODE:
        return bool({settings.TASK_RUNNER_ROLE, settings.TASK_ADMIN_ROLE} & identity.roles)
    if user.is_staff or user.is_superuser:
        return True
    return user.groups.filter(name=settings.TASK_RUNNER_ROLE).exists()


class CanRunTasks(BasePermission):
    message = "launching and cancelling tasks needs the runner role"

    def has_permission(self, request, view) -> bool:
        identity = request.auth if isinstance(request.auth, Identity) else None
        return can_run(request.user, identity)
