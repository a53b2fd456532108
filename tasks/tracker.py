"""The reporting API: the only code that writes TaskStatus.

A job reports through a ``TaskHandle``. Each change is one ``UPDATE`` that
writes only if nobody changed the row since the writer last saw it
(compare-and-swap on ``version``; on a miss the row is read again under a lock
and the change made there), so two processes writing one task never lose an
update, never starve, and never move ``version`` backwards, on PostgreSQL and
SQLite alike. The broadcast leaves after the commit, and a broadcast that fails
is logged, never raised into the job: the database is the truth and catch-up
repairs any gap.

A reporter rides out a short database outage: a status change is retried
with backoff for ``TRACKER_RETRY_SECONDS`` on a fresh connection, while plain
progress is dropped in favour of the next. An open handle also beats
(``heartbeat_at``) while its job works, and ``fail_stale_tasks`` ends every
unfinished task whose reporter has been silent too long, whoever it was.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Field, Q

from . import metrics, signals
from .live import broadcast
from .models import (
    TERMINAL_STATUSES,
    Operation,
    Status,
    TaskEvent,
    TaskStatus,
    unknown_operation,
)

logger = logging.getLogger(__name__)


class TrackerError(Exception):
    """Base of the reporting API's errors."""


class TaskNotFound(TrackerError):
    pass


class TaskAlreadyFinished(TrackerError):
    """A change was asked of a task that is completed, completed_with_errors or failed."""

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(f"task {task_id} is already {status}; it cannot change again")
        self.task_id = task_id
        self.status = status


class InvalidProgress(TrackerError, ValueError):
    pass


class InvalidResult(TrackerError, ValueError):
    """A result that JSON cannot carry (NaN, infinity, a type JSON does not have)."""


class DatabaseUnavailable(TrackerError):
    """The database stayed unreachable for longer than a change may wait."""


DATABASE_ERRORS = (OperationalError, InterfaceError)

# progress_current and progress_total are IntegerFields: 32-bit on PostgreSQL, where a
# larger value fails the write (DataError), possibly later, in the timer's thread.
PROGRESS_MAX = 2**31 - 1


class TaskCancelled(TrackerError):
    """Raised from ``progress()`` when someone asked the task to stop."""

    def __init__(self, cancelled_by: str) -> None:
        super().__init__(f"cancelled by {cancelled_by}")
        self.cancelled_by = cancelled_by


Mutation = Callable[[TaskStatus], None]


def _now() -> float:
    return time.time()


def _load(task_id: str, *, for_update: bool = False) -> TaskStatus:
    """The stored row (expired or not: a running job may finish what it started)."""
    rows = TaskStatus.objects.select_for_update() if for_update else TaskStatus.objects
    try:
        return rows.get(pk=task_id)
    except (TaskStatus.DoesNotExist, ValueError, TypeError, ValidationError):
        raise TaskNotFound(f"no task {task_id}") from None


def _publish_after_commit(task: TaskStatus) -> None:
    transaction.on_commit(lambda: broadcast.publish_change(task))
    if task.is_terminal:
        # A terminal row is always the change that ended the task (_apply refuses
        # to change a finished one): task_finished goes out once, after the commit.
        transaction.on_commit(lambda: signals.send_task_finished(task))


def _change(
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
                _publish_after_commit(task)
                return task
        else:
            with transaction.atomic():
                if _write_row(task, previous_version):
                    event.save()
                    metrics.TRACKER_WRITES.labels("update").inc()
                    _publish_after_commit(task)
                    return task
    with transaction.atomic():
        task = _load(task_id, for_update=True)
        before = copy.copy(task)
        previous_version = _apply(task, mutate, check_cancel)
        if not _write_row(task, previous_version):
            raise TrackerError(f"task {task_id} changed while locked; change not written")
        metrics.TRACKER_WRITES.labels("locked").inc()
        event = _event_of(before, task)
        if event is not None:
            event.save()
        _publish_after_commit(task)
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
    task.updated_at = max(_now(), task.updated_at)
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


def _create(
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
    now = _now()
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
        _publish_after_commit(task)
    return task


def _storable_text(message: Any) -> str:
    """PostgreSQL's text holds no NUL byte; one from a source's data shows as U+FFFD."""
    return str(message).replace("\x00", "\ufffd")


def _storable_result(value: Any) -> Any:
    """``value`` as the document will carry it: strict JSON, NUL bytes replaced as in text.

    Refused here, in the job's own call, rather than by the database at the write."""
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, dict):
        return {_storable_text(key): _storable_result(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable_result(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidResult(f"a result must be JSON: {value!r} is not a JSON number")
    if value is None or isinstance(value, bool | int | float):
        return value
    raise InvalidResult(f"a result must be JSON: {type(value).__name__} is not a JSON type")


def _validate_progress(current: Any, total: Any) -> None:
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


def _progress_only(task: TaskStatus) -> None:
    """The change of a plain progress report: only the held progress is written."""


_progress_only.plain_progress = True  # type: ignore[attr-defined]


def _discard_broken_connection() -> None:
    """Drop a connection the database went away under, so the next try opens a new one."""
    if connection.in_atomic_block:
        return
    try:
        connection.close()
    except DATABASE_ERRORS:
        pass


class TaskHandle:
    """One task as its job sees it.

    Progress arriving faster than ``TASK_PROGRESS_MIN_INTERVAL`` is held and
    written by a timer (or folded into the next change), so the latest value
    always gets out while a tight loop costs at most ten writes a second.
    """

    def __init__(self, task: TaskStatus) -> None:
        self.task_id = str(task.task_id)
        self.operation = task.operation
        self._status = task.status
        self._total = task.progress_total
        self._row = task
        self._lock = threading.RLock()
        self._last_write = 0.0
        self._pending: tuple[int, int | None, str] | None = None
        self._timer: threading.Timer | None = None

    def __repr__(self) -> str:
        return f"<TaskHandle {self.operation} {self.task_id} {self._status}>"

    @property
    def status(self) -> str:
        return self._status

    @property
    def is_terminal(self) -> bool:
        return self._status in TERMINAL_STATUSES

    # -- reporting ---------------------------------------------------------

    def progress(self, current: int, message: str = "", *, total: int | None = None) -> None:
        """Report ``current`` of ``total`` steps; shows ``processing``."""
        with self._lock:
            total = self._total if total is None else total
            _validate_progress(current, total)
            if self.is_terminal:
                raise TaskAlreadyFinished(self.task_id, self._status)
            self._pending = (current, total, _storable_text(message))
            wait = self._last_write + settings.TASK_PROGRESS_MIN_INTERVAL - time.monotonic()
            if wait > 0:
                self._schedule_flush(wait)
                return
            self._write(_progress_only, check_cancel=True)

    def error(self, message: str) -> None:
        """Record an error the task survives; it shows ``error`` until its next change."""

        text = _storable_text(message)

        def mutate(task: TaskStatus) -> None:
            task.status = Status.ERROR
            task.error = text
            task.error_count += 1

        with self._lock:
            self._write(mutate)

    def complete(self, result: Any = None) -> None:
        """End the task: ``completed``, or ``completed_with_errors`` after any ``error()``."""

        stored = _storable_result(result)

        def mutate(task: TaskStatus) -> None:
            task.status = Status.COMPLETED_WITH_ERRORS if task.error_count else Status.COMPLETED
            task.result = stored

        with self._lock:
            self._write(mutate)

    def fail(self, message: str) -> None:
        """End the task ``failed`` with ``message`` as its error."""

        text = _storable_text(message)

        def mutate(task: TaskStatus) -> None:
            task.status = Status.FAILED
            task.error = text

        with self._lock:
            self._write(mutate)

    def check_cancelled(self) -> None:
        """Raise ``TaskCancelled`` if a cancel was requested (for jobs between steps)."""
        cancelled_by = (
            TaskStatus.objects.filter(pk=self.task_id)
            .values_list("cancel_requested_by", flat=True)
            .first()
        )
        if cancelled_by:
            raise TaskCancelled(cancelled_by)

    # -- internals ---------------------------------------------------------

    def beat(self) -> None:
        """A sign of life without a change: keeps a long step inside the liveness bound."""
        table = connection.ops.quote_name(TaskStatus._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET heartbeat_at = %s WHERE task_id = %s "
                f"AND status NOT IN ({', '.join(['%s'] * len(TERMINAL_STATUSES))})",
                [
                    _now(),
                    TaskStatus._meta.pk.get_db_prep_value(self.task_id, connection),
                    *sorted(TERMINAL_STATUSES),
                ],
            )

    def _write(self, mutate: Mutation, *, check_cancel: bool = False) -> None:
        """One change, retried with backoff while the database is away (status changes);
        plain progress is dropped instead and goes out with the next change."""
        deadline = time.monotonic() + settings.TRACKER_RETRY_SECONDS
        delay = 0.25
        while True:
            try:
                return self._write_once(mutate, check_cancel=check_cancel)
            except DATABASE_ERRORS as exc:
                _discard_broken_connection()
                if self._is_plain_progress(mutate):
                    logger.warning(
                        "task %s: progress not written (%s); the next change carries it",
                        self.task_id,
                        exc.__class__.__name__,
                    )
                    return None
                if time.monotonic() + delay > deadline:
                    raise DatabaseUnavailable(
                        f"the database was unreachable for {settings.TRACKER_RETRY_SECONDS:g}s "
                        f"({exc.__class__.__name__})"
                    ) from exc
                logger.warning(
                    "task %s: database unreachable (%s); retrying in %.2fs",
                    self.task_id,
                    exc.__class__.__name__,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    @staticmethod
    def _is_plain_progress(mutate: Mutation) -> bool:
        return getattr(mutate, "plain_progress", False)

    def _write_once(self, mutate: Mutation, *, check_cancel: bool = False) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, None

        def apply(task: TaskStatus) -> None:
            if pending is not None:
                task.progress_current, task.progress_total, task.progress_message = pending
                if task.status in (Status.STARTED, Status.ERROR):
                    task.status = Status.PROCESSING
            mutate(task)

        try:
            task = _change(self.task_id, apply, check_cancel=check_cancel, known=self._row)
        except TaskAlreadyFinished as exc:
            self._status = exc.status
            raise
        except DATABASE_ERRORS:
            if pending is not None and self._pending is None:
                self._pending = pending  # not written: the next attempt or change carries it
            raise
        self._row = task
        self._status = task.status
        self._total = task.progress_total
        self._last_write = time.monotonic()

    def _schedule_flush(self, delay: float) -> None:
        if self._timer is None:
            self._timer = threading.Timer(delay, self._flush)
            self._timer.daemon = True
            self._timer.start()

    def _flush(self) -> None:
        """Write held progress from the timer's thread.

        Nothing may end that thread with a bare traceback on stderr: a value the database
        refuses is logged and dropped (the next change carries the task's state on).
        """
        try:
            with self._lock:
                self._timer = None
                if self._pending is not None and not self.is_terminal:
                    self._write(_progress_only)
        except TrackerError as exc:
            logger.warning("task %s: held progress not written: %s", self.task_id, exc)
        except DatabaseError as exc:
            logger.error(
                "task %s: held progress dropped, the database refused it (%s: %s)",
                self.task_id,
                exc.__class__.__name__,
                exc,
            )
        except Exception:
            logger.exception("task %s: held progress dropped", self.task_id)
        finally:
            connection.close()

    def _finish_from_exception(self, exc: BaseException) -> None:
        if self.is_terminal:
            return
        message = str(exc) or exc.__class__.__name__
        try:
            self.fail(message)
        except TaskAlreadyFinished:
            pass

    def _finish_on_exit(self) -> None:
        with self._lock:
            if self._pending is not None and not self.is_terminal:
                try:
                    self._write(lambda task: None)
                except TaskAlreadyFinished:
                    pass


class _Heartbeat(threading.Thread):
    """Beats for an open handle, so a long step is not taken for a silent reporter."""

    def __init__(self, handle: TaskHandle) -> None:
        super().__init__(name=f"task-heartbeat-{handle.task_id}", daemon=True)
        self.handle = handle
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(settings.TASK_HEARTBEAT_SECONDS):
                try:
                    self.handle.beat()
                except DATABASE_ERRORS as exc:  # a missed beat is survivable
                    logger.warning(
                        "task %s: heartbeat not written (%s)",
                        self.handle.task_id,
                        exc.__class__.__name__,
                    )
                    _discard_broken_connection()
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()


@contextmanager
def _running(handle: TaskHandle) -> Iterator[TaskHandle]:
    heartbeat = _Heartbeat(handle)
    heartbeat.start()
    try:
        yield handle
    except BaseException as exc:
        handle._finish_from_exception(exc)
        raise
    else:
        handle._finish_on_exit()
    finally:
        heartbeat.stop()


def create_task(
    operation: str,
    *,
    total: int | None = None,
    request_id: str | None = None,
    params: dict | None = None,
    launched_by: str = "",
    rerun_of: str | None = None,
) -> TaskHandle:
    """Create a task in ``started`` without running anything (a launch); ``rerun_of`` names
    the finished run it repeats."""
    task = _create(
        operation,
        total=total,
        request_id=request_id,
        params=params,
        launched_by=launched_by,
        rerun_of=rerun_of,
    )
    return TaskHandle(task)


def start_task(
    operation: str,
    *,
    total: int | None = None,
    request_id: str | None = None,
    params: dict | None = None,
) -> AbstractContextManager[TaskHandle]:
    """Create a task and report on it; an exception escaping the block fails it."""
    return _running(create_task(operation, total=total, request_id=request_id, params=params))


def open_task(task_id: str) -> AbstractContextManager[TaskHandle]:
    """Re-open a created task for the job that runs it."""
    return _running(TaskHandle(_load(task_id)))


def request_cancel(task_id: str, *, by: str) -> TaskStatus:
    """Ask a running task to stop at its next progress step.

    The request is a stored field (written like any change, so it counts as
    one version and is broadcast), which a job in another process sees. Asking
    again changes nothing: the first request's author stays on record.
    """
    current = _load(task_id)
    if current.is_terminal:
        raise TaskAlreadyFinished(str(current.task_id), current.status)
    if current.cancel_requested_by:
        return current

    def mutate(task: TaskStatus) -> None:
        # a retry after a concurrent write may find another request already there
        task.cancel_requested_by = task.cancel_requested_by or by or "unknown user"

    return _change(task_id, mutate, known=current)


def stale_bound(operation: str) -> int:
    """Seconds a reporter of ``operation`` may stay silent before its task is failed."""
    return settings.TASK_STALE_SECONDS_BY_OPERATION.get(operation, settings.TASK_STALE_SECONDS)


def fail_stale_tasks(*, now: float | None = None) -> int:
    """End ``failed`` every unfinished task whose reporter has been silent too long.

    Whoever reported it (a Celery job, a script, another service): no write and
    no heartbeat for the operation's bound. The check is made again on the row
    under its lock, so a reporter that speaks up meanwhile wins.
    """
    now = _now() if now is None else now
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
            f"(last sign of life {_duration(int(_now() - last))} ago)"
        )

    try:
        _change(task_id, mutate)
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


def purge_expired(*, batch_size: int = 10000, now: float | None = None) -> int:
    """Delete expired rows in batches so that readers never wait on one long statement.

    Plain SQL on purpose: a queryset ``delete()`` collects every row in Python
    first, which is what runs other task stores out of memory at a million rows.
    On PostgreSQL each batch walks the ``expires_at`` index on from where the
    last one stopped and deletes by ``ctid``: ``task_id IN (SELECT ... LIMIT)``
    was planned as a hash join over the whole table, once per batch, and took
    14 s for a million rows where this takes under 3 (bench/purge.py).
    """
    cutoff = _now() if now is None else now
    table = connection.ops.quote_name(TaskStatus._meta.db_table)
    if connection.vendor == "postgresql":
        return _purge_postgresql(table, cutoff, batch_size)
    events = connection.ops.quote_name(TaskEvent._meta.db_table)
    batch = f"SELECT task_id FROM {table} WHERE expires_at <= %s LIMIT %s"
    removed = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            # The timeline goes with its task (the batch is read twice in one write
            # transaction, which SQLite serialises: both see the same rows).
            cursor.execute(f"DELETE FROM {events} WHERE task_id IN ({batch})", [cutoff, batch_size])
            cursor.execute(f"DELETE FROM {table} WHERE task_id IN ({batch})", [cutoff, batch_size])
            count = cursor.rowcount
        removed += count
        if count < batch_size:
            return removed


def _purge_postgresql(table: str, cutoff: float, batch_size: int) -> int:
    # ``expires_at <= cutoff`` is checked again on the deleted row itself, so a
    # row that a writer renewed between the two is left alone.
    # The timeline goes with its task, in the same statement.
    events = connection.ops.quote_name(TaskEvent._meta.db_table)
    sql = (
        f"WITH gone AS (DELETE FROM {table} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {table} WHERE expires_at <= %s AND expires_at >= %s "
        f"ORDER BY expires_at LIMIT %s)) AND expires_at <= %s RETURNING task_id, expires_at), "
        f"timeline AS (DELETE FROM {events} WHERE task_id IN (SELECT task_id FROM gone)) "
        f"SELECT count(*), max(expires_at) FROM gone"
    )
    removed, low = 0, float("-inf")
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [cutoff, low, batch_size, cutoff])
            count, highest = cursor.fetchone()
        removed += count
        if count < batch_size:
            return removed
        low = highest
