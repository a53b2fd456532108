"""Runs still going long after their operation usually ends: "running long".

A run still ``started``, ``processing`` or ``error`` (unfinished) for more than
``RUNNING_LONG_FACTOR`` times its operation's p95 duration (over its last finished
runs, ``overview.stats``), and at least ``RUNNING_LONG_MIN_SECONDS``, is running
long: said on the monitor's header and the task page, and alerted once (the
watchdog, ``operations.watch``). An operation with no finished run yet has no
"usual" and is never said to run long; the stale check and the job time limit
bound it instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings

from tasks.models import Operation, Status, TaskStatus

from . import alerts, overview

RUNNING_LONG = "running_long"
UNFINISHED = (Status.STARTED, Status.PROCESSING, Status.ERROR)
NOTHING_HIDDEN: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LongRun:
    task_id: str
    operation: str
    created_at: float
    running_for: float
    usual: float  # the operation's p95 duration, seconds

    @property
    def words(self) -> str:
        return (
            f"{self.operation} {self.task_id[:8]} has been running "
            f"{alerts.duration(self.running_for)}, more than {settings.RUNNING_LONG_FACTOR:g} × "
            f"its usual {alerts.duration(self.usual)} (p95 of its last runs)."
        )


def threshold(p95: float | None) -> float | None:
    """Seconds after which a run is long; None without a usual duration."""
    if p95 is None:
        return None
    return max(settings.RUNNING_LONG_FACTOR * p95, float(settings.RUNNING_LONG_MIN_SECONDS))


def long_runs(
    *, now: float | None = None, hidden: frozenset[str] = NOTHING_HIDDEN
) -> list[LongRun]:
    """Unfinished runs past their operation's threshold, oldest first."""
    now = time.time() if now is None else now
    candidates = list(
        TaskStatus.objects.filter(
            status__in=UNFINISHED,
            created_at__lt=now - settings.RUNNING_LONG_MIN_SECONDS,
            created_at__gt=now - settings.TASK_STATUS_TTL,
            expires_at__gt=now,
        )
        .exclude(operation__in=hidden)
        .order_by("created_at")
        .values_list("task_id", "operation", "created_at")
    )
    usual: dict[str, float | None] = {}
    found = []
    for task_id, operation, created_at in candidates:
        if operation not in usual:
            figures = overview.stats(operation, hidden=NOTHING_HIDDEN)
            usual[operation] = figures["p95_duration"] if figures else None
        p95 = usual[operation]
        bound = threshold(p95)
        if p95 is not None and bound is not None and now - created_at > bound:
            found.append(LongRun(str(task_id), operation, created_at, now - created_at, p95))
    return found


def note_for(task: TaskStatus, *, now: float | None = None) -> str | None:
    """The task page's line when this task runs long; None otherwise."""
    if task.status not in UNFINISHED:
        return None
    now = time.time() if now is None else now
    if now - task.created_at <= settings.RUNNING_LONG_MIN_SECONDS:
        return None
    figures = overview.stats(task.operation, hidden=NOTHING_HIDDEN)
    p95 = figures["p95_duration"] if figures else None
    bound = threshold(p95)
    if p95 is None or bound is None or now - task.created_at <= bound:
        return None
    run = LongRun(str(task.task_id), task.operation, task.created_at, now - task.created_at, p95)
    return f"Running long: {run.words}"


def compose(run: LongRun) -> alerts.Alert:
    label = Operation(run.operation).label if run.operation in Operation.values else run.operation
    details = [
        ("Operation", f"{label} ({run.operation})"),
        ("Task", run.task_id),
    ]
    link = alerts.task_link(run.task_id)
    if link:
        details.append(("Link", link))
    details += [
        ("Started", f"{alerts.local_time(run.created_at)} ({settings.TIME_ZONE})"),
        ("Running for", alerts.duration(run.running_for)),
        ("Usual (p95)", alerts.duration(run.usual)),
    ]
    return alerts.Alert(
        subject=f"[tasks] {run.operation} is running long",
        headline=f"{label} ({run.operation}): {run.words}",
        details=details,
    )


def send_alert(task_id: str, *, now: float | None = None) -> alerts.Outcome:
    """The running-long alert of one task, once per target (nothing if it ended meanwhile)."""
    for run in long_runs(now=now):
        if run.task_id == task_id:
            subject = alerts.Subject(run.task_id, run.operation)
            return alerts.deliver(subject, RUNNING_LONG, Status.FAILED, compose(run))
    return alerts.Outcome()
