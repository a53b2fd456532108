"""Names of the routes that task updates travel on, in one place.

Every update is published once, on one Redis channel; each server process
holds one subscription to it and routes the update to its own clients by the
keys below (the hub's routing index), so that Redis does constant work per
update however many watch.
"""

from __future__ import annotations

from django.conf import settings

RouteKey = tuple[str, str]


def updates_channel() -> str:
    """The Redis pub/sub channel of every update (``TASK_UPDATES_CHANNEL``)."""
    return settings.TASK_UPDATES_CHANNEL


ALL: RouteKey = ("all", "")


def operation_key(operation: str) -> RouteKey:
    return ("operation", operation)


def task_key(task_id: str) -> RouteKey:
    return ("task", task_id)
