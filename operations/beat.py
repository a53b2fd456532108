"""A beat scheduler that sends nothing unless it holds a Redis lock: exactly one beat runs.

Why not RedBeat: two small ideas suffice and need no new dependency.

* **The lock.** Every tick, the scheduler takes or renews ``BEAT_LOCK_KEY``
  (``SET NX PX``, renewed only by its holder through a compare-and-expire
  script). A beat without the lock sends nothing and retries every third of
  the TTL; if the holder dies, its lock expires after BEAT_LOCK_TTL_SECONDS and
  a standby takes over.
* **Shared last-run times.** When an entry fires, its new ``last_run_at`` is
  written to Redis; a beat that takes over loads them first, so it neither
  re-fires what the previous holder just sent nor misses what came due.

Without Redis (the embedded default) there is one process and no lock.

Every tick of the beat holding the lock also writes the time to ``…:tick``: the
watchdog (``operations.watchdog``), running in the workers, tells from it whether
beat is alive.

Entries of ``IN_BEAT_TASKS`` are not sent: the beat holding the lock runs them
itself, in a thread (one run at a time per entry). That is for the check that
scheduled runs started (``operations.alerts``), which must work when no worker does.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime
from typing import Any, cast

from celery.beat import ScheduleEntry, Scheduler
from django.conf import settings
from django.db import connection

from tasks import metrics

from . import celery_tasks  # noqa: F401  (registers the tasks the beat runs itself)

logger = logging.getLogger(__name__)

IN_BEAT_TASKS = frozenset({"operations.alert_not_started"})

RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class LockedScheduler(Scheduler):
    """In-memory schedule (from settings) + a Redis leader lock + shared last-run times."""

    # Seconds between ticks at most: Celery's class default, or beat_max_interval.
    max_interval: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lock_key = f"{settings.BEAT_LOCK_KEY}:lock"
        self.state_key = f"{settings.BEAT_LOCK_KEY}:last-run"
        self.tick_key = f"{settings.BEAT_LOCK_KEY}:tick"
        self.ttl_ms = int(settings.BEAT_LOCK_TTL_SECONDS * 1000)
        self.token = uuid.uuid4().hex
        self.leader = False
        self.announced_standby = False
        self.redis = None
        self.in_beat: dict[str, threading.Thread] = {}
        if settings.REDIS_URL:
            import redis

            self.redis = redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5
            )
        kwargs.pop("schedule_filename", None)
        super().__init__(*args, **kwargs)
        # Renew well within the TTL, whatever the schedule's own rhythm.
        self.max_interval = min(self.max_interval, settings.BEAT_LOCK_TTL_SECONDS / 3)

    # -- the lock ----------------------------------------------------------------

    def _hold_lock(self) -> bool:
        if self.redis is None:
            return True
        try:
            if self.leader and self.redis.eval(RENEW, 1, self.lock_key, self.token, self.ttl_ms):
                return True
            return bool(self.redis.set(self.lock_key, self.token, nx=True, px=self.ttl_ms))
        except Exception as exc:  # Redis down: nobody may send, so neither do we
            logger.warning("beat: cannot reach Redis for the lock (%s); standing by", exc)
            return False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._hold_lock():
            if self.leader:
                logger.warning("beat: lost the lock %s; standing by", self.lock_key)
            elif not self.announced_standby:
                logger.info("beat: another beat holds the lock %s; standing by", self.lock_key)
            self.announced_standby = True
            self.leader = False
            metrics.BEAT_LOCK_HELD.set(0)
            return self.max_interval
        metrics.BEAT_LOCK_HELD.set(1)
        self._record_tick()
        if not self.leader:
            logger.info("beat: holding the lock %s; sending schedules", self.lock_key)
            self.leader = True
            self.announced_standby = False
            self._load_last_runs()
        return min(super().tick(*args, **kwargs), self.max_interval)

    def _record_tick(self) -> None:
        """When the sending beat was last alive, for the watchdog (``operations.watchdog``)."""
        now = time.time()
        metrics.BEAT_LAST_TICK.set(now)
        if self.redis is None:
            return
        try:
            self.redis.set(self.tick_key, repr(now))
        except Exception as exc:
            logger.warning("beat: could not record its tick (%s)", exc.__class__.__name__)

    def close(self) -> None:
        super().close()
        if self.redis is not None and self.leader:
            try:
                self.redis.eval(RELEASE, 1, self.lock_key, self.token)
            except Exception:
                logger.warning("beat: could not release the lock", exc_info=True)
            self.leader = False
            metrics.BEAT_LOCK_HELD.set(0)

    # -- entries run by the beat itself ------------------------------------------------

    def apply_async(
        self, entry: ScheduleEntry, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        if entry.task not in IN_BEAT_TASKS:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        if advance:
            entry = self.reserve(entry)
        running = self.in_beat.get(entry.name)
        if running is not None and running.is_alive():
            logger.warning("beat: %s is still running; this run is skipped", entry.name)
            return None
        thread = threading.Thread(
            target=_run_in_beat, args=(self.app, entry), name=f"beat-{entry.name}", daemon=True
        )
        self.in_beat[entry.name] = thread
        thread.start()
        return None

    # -- shared last-run times -----------------------------------------------------

    def reserve(self, entry: ScheduleEntry) -> ScheduleEntry:
        new_entry = super().reserve(entry)
        metrics.BEAT_SENT.labels(entry.name).inc()
        if self.redis is not None:
            try:
                self.redis.hset(self.state_key, new_entry.name, new_entry.last_run_at.isoformat())
            except Exception:
                logger.warning("beat: could not record the run of %s", entry.name, exc_info=True)
        return new_entry

    def _load_last_runs(self) -> None:
        if self.redis is None:
            return
        try:
            # The synchronous client: a dict (of bytes, no decode_responses), not an awaitable.
            stored = cast("dict[bytes, bytes]", self.redis.hgetall(self.state_key))
        except Exception:
            logger.warning("beat: could not read last-run times", exc_info=True)
            return
        for raw_name, raw_value in stored.items():
            name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
            entry = self.schedule.get(name)
            if entry is None:
                continue
            value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
            try:
                entry.last_run_at = datetime.fromisoformat(value)
            except ValueError:
                continue
        self._heap = None  # rebuild the heap from the loaded times


def _run_in_beat(app: Any, entry: ScheduleEntry) -> None:
    try:
        app.tasks[entry.task](*(entry.args or ()), **(entry.kwargs or {}))
    except Exception:
        logger.exception("beat: %s failed", entry.name)
    finally:
        connection.close()
