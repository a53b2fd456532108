"""How a handle's reports reach the store: progress held and coalesced by a timer,
status changes retried through a short database outage, and the heartbeat thread
that keeps a long step inside the liveness bound."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError, connection

from ..models import TERMINAL_STATUSES, Status, TaskStatus
from .errors import DATABASE_ERRORS, DatabaseUnavailable, TaskAlreadyFinished, TrackerError
from .store import Mutation, change, clock, discard_broken_connection, progress_only

logger = logging.getLogger("tasks.tracker")
Writer = TypeVar("Writer", bound="ReportWriter")


class ReportWriter:
    """The write side of a ``TaskHandle``: one task's row as this writer last wrote it,
    its held progress and the timer that flushes it."""

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

    @property
    def is_terminal(self) -> bool:
        return self._status in TERMINAL_STATUSES

    def fail(self, message: str) -> None:
        """End the task ``failed`` (``TaskHandle`` says how); an escaping exception uses it."""
        raise NotImplementedError

    def beat(self) -> None:
        """A sign of life without a change: keeps a long step inside the liveness bound."""
        table = connection.ops.quote_name(TaskStatus._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET heartbeat_at = %s WHERE task_id = %s "
                f"AND status NOT IN ({', '.join(['%s'] * len(TERMINAL_STATUSES))})",
                [
                    clock(),
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
                discard_broken_connection()
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
            task = change(self.task_id, apply, check_cancel=check_cancel, known=self._row)
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
                    self._write(progress_only)
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

    def __init__(self, handle: ReportWriter) -> None:
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
                    discard_broken_connection()
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()


@contextmanager
def running(handle: Writer) -> Iterator[Writer]:
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
