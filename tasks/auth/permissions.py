"""Authorisation rules shared by REST views, the WebSocket consumer and the pages."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.permissions import BasePermission


def can_read(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.is_active)


def can_run(user: Any) -> bool:
    """Launch and cancel: staff, or holders of the runner role (a group of that name)."""
    if not can_read(user):
        return False
    if user.is_staff or user.is_superuser:
        return True
    return user.groups.filter(name=settings.TASK_RUNNER_ROLE).exists()


class CanRunTasks(BasePermission):
    message = "launching and cancelling tasks needs the runner role"

    def has_permission(self, request, view) -> bool:
        return can_run(request.user)
