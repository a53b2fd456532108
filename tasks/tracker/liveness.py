"""Liveness: a task whose reporter has gone silent ends ``failed``, whoever reported it."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db.models import Q

from ..models import TERMINAL_STATUSES, Operation, Status, TaskStatus
from .errors import TaskAlreadyFinished, TaskNotFound
from .store import change, clock

logger = logging.getLogger("tasks.tracker")


def stale_bound(operation: str) -> int:
    """Seconds a reporter of ``operation`` may stay silent before its task is failed."""
    return settings.TASK_STALE_SECONDS_BY_OPERATION.get(operation, settings.TASK_STALE_SECONDS)


def fail_stale_tasks(*, now: float | None = None) -> int:
    """End ``failed`` every unfinished task whose reporter has been silent too long.

    Whoever reported it (a Celery job, a script, another service): no write and
    no heartbeat for the operation's bound. The check is made again on the row
    under its lock, so a reporter that speaks up meanwhile wins.
    """
    now = clock() if now is None else now
    failed = 0
    for operation in Operation.values:
        bound = stale_bound(operation)
        cutoff = now - bound
        candidates = (
            TaskStatus.objects.filter(operation=operation, updated_at__lt=cutoff)
            .exclude(status__in=TERMINAL_STATUSES)
            .filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff))
            .values_list("task_id", flat=True)
        )
        for task_id in list(candidates):
            if _fail_if_silent(str(task_id), cutoff, bound):
                failed += 1
    return failed


class _SpokeUp(Exception):
    """The reporter wrote or beat after the stale check read the row."""


def _fail_if_silent(task_id: str, cutoff: float, bound: int) -> bool:
    def mutate(task: TaskStatus) -> None:
        last = max(task.updated_at, task.heartbeat_at or 0.0)
        if last >= cutoff:
            raise _SpokeUp
        task.status = Status.FAILED
        task.error = (
            f"no report for {_duration(bound)}: its reporter went silent "
            f"(last sign of life {_duration(int(clock() - last))} ago)"
        )

    try:
        change(task_id, mutate)
    except (_SpokeUp, TaskNotFound, TaskAlreadyFinished):
        return False
    logger.warning("task %s: failed, no report for %s", task_id, _duration(bound))
    return True


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"
