"""Authorisation rules shared by REST views, the WebSocket consumer and the pages."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.permissions import BasePermission

from accounts.identity import Identity


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
    if identity is not None and identity.by_token and settings.ENTRA_MODE:
        return bool({settings.TASK_RUNNER_ROLE, settings.TASK_ADMIN_ROLE} & identity.roles)
    if user.is_staff or user.is_superuser:
        return True
    return user.groups.filter(name=settings.TASK_RUNNER_ROLE).exists()


def hidden_operations(user: Any, identity: Identity | None = None) -> frozenset[str]:
    """The personal-data operations whose tasks ``user`` may not see.

    ``PERSONAL_DATA_READER_ROLES`` names each one's reader role. Staff see
    everything. As for running, an Entra ID token in hand decides by its
    roles; otherwise the role is a Django group of that name.
    """
    roles_by_operation: dict[str, str] = settings.PERSONAL_DATA_READER_ROLES
    if not roles_by_operation:
        return frozenset()
    if not can_read(user):
        return frozenset(roles_by_operation)
    if settings.ENTRA_MODE and identity is not None and identity.by_token:
        if settings.TASK_ADMIN_ROLE in identity.roles:
            return frozenset()
        held = identity.roles
    elif user.is_staff or user.is_superuser:
        return frozenset()
    elif identity is not None and identity.by_token:
        held = identity.roles  # a local token: the user's groups when it was validated
    else:
        held = frozenset(
            user.groups.filter(name__in=set(roles_by_operation.values())).values_list(
                "name", flat=True
            )
        )
    return frozenset(op for op, role in roles_by_operation.items() if role not in held)


def can_see_operation(user: Any, operation: str, identity: Identity | None = None) -> bool:
    """Whether tasks (and documents) of ``operation`` exist for ``user`` at all."""
    return operation not in hidden_operations(user, identity)


def request_identity(request: Any) -> Identity | None:
    """The bearer identity DRF authenticated ``request`` with, if any."""
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, Identity) else None


def hidden_for_request(request: Any) -> frozenset[str]:
    return hidden_operations(request.user, request_identity(request))


class CanRunTasks(BasePermission):
    message = "launching and cancelling tasks needs the runner role"

    def has_permission(self, request, view) -> bool:
        return can_run(request.user, request_identity(request))
