"""The write path: compare-and-swap changes, the timeline, creation, and what a value
must be to be stored. Only ``handle``, ``liveness`` and ``expiry`` call it."""

from __future__ import annotations

import copy
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Field

from .. import metrics, signals
from ..live import broadcast
from ..models import Operation, Status, TaskEvent, TaskStatus, unknown_operation
from .errors import (
    DATABASE_ERRORS,
    PROGRESS_MAX,
    InvalidProgress,
    InvalidResult,
    TaskAlreadyFinished,
    TaskCancelled,
    TaskNotFound,
    TrackerError,
)

Mutation = Callable[[TaskStatus], None]


def clock() -> float:
    return time.time()


def load(task_id: str, *, for_update: bool = False) -> TaskStatus:
    """The stored row (expired or not: a running job may finish what it started)."""
    rows = TaskStatus.objects.select_for_update() if for_update else TaskStatus.objects
    try:
        return rows.get(pk=task_id)
    except (TaskStatus.DoesNotExist, ValueError, TypeError, ValidationError):
        raise TaskNotFound(f"no task {task_id}") from None


def publish_after_commit(task: TaskStatus) -> None:
    transaction.on_commit(lambda: broadcast.publish_change(task))
    if task.is_terminal:
        # A terminal row is always the change that ended the task (_apply refuses
        # to change a finished one): task_finished goes out once, after the commit.
        transaction.on_commit(lambda: signals.send_task_finished(task))


def change(
    task_id: str,
    mutate: Mutation,
    *,
    check_cancel: bool = False,
    known: TaskStatus | None = None,
) -> TaskStatus:
    """Apply ``mutate`` to the latest row.

    ``known`` is the row as this writer last wrote it: when nobody else has
    written since, the change costs one compare-and-swap ``UPDATE``. When
    someone has (another process, a cancel request), or there is no ``known``
    row, the change is made on the row read under a lock (``SELECT ... FOR
    UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers), so
    a writer that keeps losing the race to a faster one still gets through.
    """
    if known is not None:
        task = copy.copy(known)
        previous_version = _apply(task, mutate, check_cancel)
        event = _event_of(known, task)
        if event is None:  # plain progress: one statement, no transaction
            if _write_row(task, previous_version):
                metrics.TRACKER_WRITES.labels("update").inc()
                publish_after_commit(task)
                return task
        else:
            with transaction.atomic():
                if _write_row(task, previous_version):
                    event.save()
                    metrics.TRACKER_WRITES.labels("update").inc()
                    publish_after_commit(task)
                    return task
    with transaction.atomic():
        task = load(task_id, for_update=True)
        before = copy.copy(task)
        previous_version = _apply(task, mutate, check_cancel)
        if not _write_row(task, previous_version):
            raise TrackerError(f"task {task_id} changed while locked; change not written")
        metrics.TRACKER_WRITES.labels("locked").inc()
        event = _event_of(before, task)
        if event is not None:
            event.save()
        publish_after_commit(task)
    return task


def _event_of(before: TaskStatus, after: TaskStatus) -> TaskEvent | None:
    """The timeline entry of a change: a new status, a new error, or a cancel request."""
    if after.cancel_requested_by and not before.cancel_requested_by:
        kind, by = TaskEvent.Kind.CANCEL_REQUESTED, after.cancel_requested_by
    elif after.status != before.status or after.error_count != before.error_count:
        kind, by = TaskEvent.Kind.STATUS, ""
    else:
        return None
    return TaskEvent(
        task_id=after.task_id,
        version=after.version,
        at=after.updated_at,
        kind=kind,
        status=after.status,
        progress_current=after.progress_current,
        progress_total=after.progress_total,
        progress_message=after.progress_message,
        error=after.error,
        by=by,
    )


def _apply(task: TaskStatus, mutate: Mutation, check_cancel: bool) -> int:
    """Mutate ``task`` into its next version; returns the version it replaces."""
    if task.is_terminal:
        raise TaskAlreadyFinished(str(task.task_id), task.status)
    if check_cancel and task.cancel_requested_by:
        raise TaskCancelled(task.cancel_requested_by)
    previous_version = task.version
    mutate(task)
    task.updated_at = max(clock(), task.updated_at)
    task.expires_at = task.updated_at + settings.TASK_STATUS_TTL
    task.version = previous_version + 1
    return previous_version


def _column(name: str) -> tuple[Field[Any, Any], str]:
    """A field of TaskStatus that is a column of its table, and the column's name."""
    field = TaskStatus._meta.get_field(name)
    if not isinstance(field, Field) or field.column is None:
        raise TypeError(f"TaskStatus.{name} is not a column")
    return field, field.column


# (field, column) of what a change writes, and of the primary key.
_CHANGED_FIELDS = tuple(
    _column(name)
    for name in (
        "status",
        "progress_current",
        "progress_total",
        "progress_message",
        "result",
        "error",
        "error_count",
        "updated_at",
        "expires_at",
        "version",
        "cancel_requested_by",
    )
)
_PRIMARY_KEY = _column(TaskStatus._meta.pk.name)


def _write_row(task: TaskStatus, previous_version: int) -> bool:
    """The compare-and-swap ``UPDATE``, as plain SQL.

    The hot path of every report: the queryset ``update()`` spent more time
    building its SQL than the database spent running it. Values go through
    each field's own preparation, so JSON and UUIDs are stored as the ORM would.
    """
    ops = connection.ops
    table = ops.quote_name(TaskStatus._meta.db_table)
    assignments = ", ".join(f"{ops.quote_name(column)} = %s" for _, column in _CHANGED_FIELDS)
    pk, pk_column = _PRIMARY_KEY
    sql = (
        f"UPDATE {table} SET {assignments} "
        f"WHERE {ops.quote_name(pk_column)} = %s AND {ops.quote_name('version')} = %s"
    )
    params = [
        field.get_db_prep_save(getattr(task, field.attname), connection)
        for field, _ in _CHANGED_FIELDS
    ]
    params += [pk.get_db_prep_value(task.pk, connection), previous_version]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


def create(
    operation: str,
    *,
    total: int | None,
    request_id: str | None,
    params: dict | None,
    launched_by: str,
    rerun_of: str | None = None,
) -> TaskStatus:
    if operation not in Operation.values:
        raise TrackerError(unknown_operation(operation))
    if total is not None and (not isinstance(total, int) or not 0 <= total <= PROGRESS_MAX):
        raise InvalidProgress(f"total must be an integer from 0 to {PROGRESS_MAX}, got {total!r}")
    now = clock()
    with transaction.atomic():
        task = TaskStatus.objects.create(
            task_id=uuid.uuid4(),
            operation=operation,
            status=Status.STARTED,
            progress_current=0 if total is not None else None,
            progress_total=total,
            created_at=now,
            updated_at=now,
            expires_at=now + settings.TASK_STATUS_TTL,
            version=1,
            request_id=(request_id or "")[:128],
            launched_by=launched_by[:150],
            params=params,
            rerun_of=rerun_of,
        )
        metrics.TRACKER_WRITES.labels("create").inc()
        TaskEvent.objects.create(
            task_id=task.task_id,
            version=1,
            at=now,
            status=task.status,
            progress_current=task.progress_current,
            progress_total=task.progress_total,
        )
        publish_after_commit(task)
    return task


def storable_text(message: Any) -> str:
    """PostgreSQL's text holds no NUL byte; one from a source's data shows as U+FFFD."""
    return str(message).replace("\x00", "\ufffd")


def storable_result(value: Any) -> Any:
    """``value`` as the document will carry it: strict JSON, NUL bytes replaced as in text.

    Refused here, in the job's own call, rather than by the database at the write."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(key): storable_result(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable_result(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidResult(f"a result must be JSON: {value!r} is not a JSON number")
    if value is None or isinstance(value, bool | int | float):
        return value
    raise InvalidResult(f"a result must be JSON: {type(value).__name__} is not a JSON type")


def validate_progress(current: Any, total: Any) -> None:
    """Refuse in the caller what the database would refuse later, maybe in the timer's thread."""
    for name, value in (("current", current), ("total", total)):
        if value is None and name == "total":
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidProgress(f"progress {name} must be an integer, got {value!r}")
        if value < 0:
            raise InvalidProgress(f"progress {name} must not be negative, got {value}")
        if value > PROGRESS_MAX:
            raise InvalidProgress(f"progress {name} must be at most {PROGRESS_MAX}, got {value}")
    if total is not None and current > total:
        raise InvalidProgress(f"progress current {current} is above total {total}")


def progress_only(task: TaskStatus) -> None:
    """The change of a plain progress report: only the held progress is written."""


progress_only.plain_progress = True  # type: ignore[attr-defined]


def discard_broken_connection() -> None:
    """Drop a connection the database went away under, so the next try opens a new one."""
    if connection.in_atomic_block:
        return
    try:
        connection.close()
    except DATABASE_ERRORS:
        pass
