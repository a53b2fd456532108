"""The reporting API: the only code that writes TaskStatus.

A job reports through a ``TaskHandle`` (``handle``: what a job author reads
first). Each change is one ``UPDATE`` that writes only if nobody changed the row
since the writer last saw it (compare-and-swap on ``version``; on a miss the row
is read again under a lock and the change made there), so two processes writing
one task never lose an update, never starve, and never move ``version``
backwards, on PostgreSQL and SQLite alike (``store``). The broadcast leaves
after the commit, and a broadcast that fails is logged, never raised into the
job: the database is the truth and catch-up repairs any gap.

A reporter rides out a short database outage: a status change is retried
with backoff for ``TRACKER_RETRY_SECONDS`` on a fresh connection, while plain
progress is dropped in favour of the next. An open handle also beats
(``heartbeat_at``) while its job works, and ``fail_stale_tasks`` ends every
unfinished task whose reporter has been silent too long, whoever it was
(``liveness``). ``purge_expired`` deletes what has expired (``expiry``).
"""

from .errors import (
    DATABASE_ERRORS,
    PROGRESS_MAX,
    DatabaseUnavailable,
    InvalidProgress,
    InvalidResult,
    TaskAlreadyFinished,
    TaskCancelled,
    TaskNotFound,
    TrackerError,
)
from .expiry import purge_expired
from .handle import TaskHandle, create_task, open_task, request_cancel, start_task
from .liveness import fail_stale_tasks, stale_bound
from .store import load as _load

__all__ = [
    "DATABASE_ERRORS",
    "PROGRESS_MAX",
    "DatabaseUnavailable",
    "InvalidProgress",
    "InvalidResult",
    "TaskAlreadyFinished",
    "TaskCancelled",
    "TaskHandle",
    "TaskNotFound",
    "TrackerError",
    "_load",
    "create_task",
    "fail_stale_tasks",
    "open_task",
    "purge_expired",
    "request_cancel",
    "stale_bound",
    "start_task",
]
