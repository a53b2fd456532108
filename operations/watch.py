"""The watchdog's thread, in every Celery worker: late scheduled runs and runs running long.

Started on ``worker_ready`` (connected in ``operations.celery_tasks``); every
``WATCHDOG_CHECK_SECONDS`` it sends what was deferred and is due (job retries,
alerts' next tries: ``operations.deferred``), exports the schedule's gauges and enqueues, on the
alert queue, one alert per newly late run (``operations.watchdog``) and per run
running long (``operations.running_long``). Every worker looks; a Redis ``SET
NX`` per finding makes exactly one of them enqueue its alert (in-process without
Redis, the embedded default's single process). The alert task then delivers it
once per target (``AlertDelivery``), like every alert.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, cast

from celery import current_app
from django.conf import settings
from django.db import connection

from tasks import metrics

from . import alerts, deferred, running_long, watchdog

logger = logging.getLogger(__name__)

# A finding is remembered this long: longer than any window in which it could recur.
_TOLD_SECONDS = 8 * 24 * 3600
_told_in_process: set[str] = set()
_told_lock = threading.Lock()


def first_to_tell(finding: str) -> bool:
    """True for exactly one caller per ``finding`` (one worker enqueues its alert)."""
    client = watchdog.redis_client()
    if client is None:
        with _told_lock:
            if finding in _told_in_process:
                return False
            _told_in_process.add(finding)
            return True
    key = f"{settings.BEAT_LOCK_KEY}:watchdog:{finding}"
    return bool(client.set(key, "1", nx=True, ex=_TOLD_SECONDS))


def check(*, now: float | None = None) -> list[str]:
    """One look: gauges exported, alerts enqueued once; what is late or running long."""
    deferred.send_due(now=now)
    export_queue_depths()
    states = watchdog.schedule_state(now=now)
    last_tick = watchdog.beat_last_tick()
    watchdog.export(states, last_tick)
    found = []
    for state in states.values():
        if state.late_since is None:
            continue
        due = state.late_since
        found.append(f"{watchdog.LATE}:{state.operation}")
        if first_to_tell(f"late:{state.operation}:{int(due)}"):
            logger.warning(
                "%s: the scheduled run due at %s has not started (%s)",
                state.operation,
                alerts.local_time(due),
                watchdog.beat_in_words(last_tick),
            )
            _enqueue(watchdog.LATE, state.operation, due)
    for run in running_long.long_runs(now=now):
        found.append(f"{running_long.RUNNING_LONG}:{run.task_id}")
        if first_to_tell(f"running-long:{run.task_id}"):
            logger.warning("task %s: %s", run.task_id, run.words)
            _enqueue(running_long.RUNNING_LONG, run.operation, run.created_at, run.task_id)
    return found


def export_queue_depths() -> None:
    """``tasksite_queue_depth`` of the jobs' and the alerts' queues (Redis lists)."""
    client = watchdog.redis_client()
    if client is None:
        return
    for queue in dict.fromkeys([settings.CELERY_TASK_DEFAULT_QUEUE, settings.ALERT_QUEUE]):
        metrics.get().QUEUE_DEPTH.labels(queue).set(int(cast("int", client.llen(queue))))


def _enqueue(event: str, operation: str, when: float, task_id: str | None = None) -> None:
    current_app.send_task(
        "operations.send_watchdog_alert",
        args=[event, operation, when, task_id],
        queue=settings.ALERT_QUEUE,
    )


class Watchdog(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            try:
                check()
            except Exception:  # a database or Redis outage: look again next time
                logger.warning("watchdog: check failed", exc_info=True)
            finally:
                connection.close()
            if self.stopped.wait(settings.WATCHDOG_CHECK_SECONDS):
                return

    def stop(self) -> None:
        self.stopped.set()


_started: list[Watchdog] = []


def start(**_: Any) -> None:
    """``worker_ready``: one watchdog thread per worker process."""
    if _started or settings.WATCHDOG_CHECK_SECONDS <= 0:
        return
    watchdog_thread = Watchdog()
    _started.append(watchdog_thread)
    watchdog_thread.start()
    logger.info("watchdog: looking every %gs", settings.WATCHDOG_CHECK_SECONDS)
