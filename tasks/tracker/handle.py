"""The handle a job holds: ``start_task``, ``open_task``, ``TaskHandle``.

    with start_task("daily_sales", total=len(locations)) as task:  # "started"
        task.progress(1, "Location 1 of 3")                          # "processing"
        task.error("L02: export missing")                            # "error", goes on
        task.complete({"locations": 3})  # "completed_with_errors" after an error

An exception escaping the block ends the task ``failed`` with its message. The
writes themselves are ``store``'s; the silent-reporter check is ``liveness``'s.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any

from django.conf import settings

from ..models import Status, TaskStatus
from .errors import (
    TaskAlreadyFinished,
    TaskCancelled,
)
from .store import (
    change,
    create,
    load,
    progress_only,
    storable_result,
    storable_text,
    validate_progress,
)
from .writer import ReportWriter, running


class TaskHandle(ReportWriter):
    """One task as its job sees it.

    Progress arriving faster than ``TASK_PROGRESS_MIN_INTERVAL`` is held and
    written by a timer (or folded into the next change), so the latest value
    always gets out while a tight loop costs at most ten writes a second.
    """

    def __repr__(self) -> str:
        return f"<TaskHandle {self.operation} {self.task_id} {self._status}>"

    @property
    def status(self) -> str:
        return self._status

    # -- reporting ---------------------------------------------------------

    def progress(self, current: int, message: str = "", *, total: int | None = None) -> None:
        """Report ``current`` of ``total`` steps; shows ``processing``."""
        with self._lock:
            total = self._total if total is None else total
            validate_progress(current, total)
            if self.is_terminal:
                raise TaskAlreadyFinished(self.task_id, self._status)
            self._pending = (current, total, storable_text(message))
            wait = self._last_write + settings.TASK_PROGRESS_MIN_INTERVAL - time.monotonic()
            if wait > 0:
                self._schedule_flush(wait)
                return
            self._write(progress_only, check_cancel=True)

    def error(self, message: str) -> None:
        """Record an error the task survives; it shows ``error`` until its next change."""

        text = storable_text(message)

        def mutate(task: TaskStatus) -> None:
            task.status = Status.ERROR
            task.error = text
            task.error_count += 1

        with self._lock:
            self._write(mutate)

    def complete(self, result: Any = None) -> None:
        """End the task: ``completed``, or ``completed_with_errors`` after any ``error()``."""

        stored = storable_result(result)

        def mutate(task: TaskStatus) -> None:
            task.status = Status.COMPLETED_WITH_ERRORS if task.error_count else Status.COMPLETED
            task.result = stored

        with self._lock:
            self._write(mutate)

    def fail(self, message: str) -> None:
        """End the task ``failed`` with ``message`` as its error."""

        text = storable_text(message)

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
    task = create(
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
    return running(create_task(operation, total=total, request_id=request_id, params=params))


def open_task(task_id: str) -> AbstractContextManager[TaskHandle]:
    """Re-open a created task for the job that runs it."""
    return running(TaskHandle(load(task_id)))


def request_cancel(task_id: str, *, by: str) -> TaskStatus:
    """Ask a running task to stop at its next progress step.

    The request is a stored field (written like any change, so it counts as
    one version and is broadcast), which a job in another process sees. Asking
    again changes nothing: the first request's author stays on record.
    """
    current = load(task_id)
    if current.is_terminal:
        raise TaskAlreadyFinished(str(current.task_id), current.status)
    if current.cancel_requested_by:
        return current

    def mutate(task: TaskStatus) -> None:
        # a retry after a concurrent write may find another request already there
        task.cancel_requested_by = task.cancel_requested_by or by or "unknown user"

    return change(task_id, mutate, known=current)
