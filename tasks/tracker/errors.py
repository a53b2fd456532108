"""What the reporting API raises, and the database errors a reporter rides out."""

from __future__ import annotations

from django.db import InterfaceError, OperationalError


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
