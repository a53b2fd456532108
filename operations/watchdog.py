"""Nothing silently late: missed scheduled runs and beat's liveness, seen without beat.

Beat is what launches scheduled runs, so a beat that is down cannot be what
notices they did not happen. The watchdog runs in every Celery worker instead, in
a thread started on ``worker_ready`` (``operations.watch``), every
``WATCHDOG_CHECK_SECONDS``; this module is what it and the pages know:

- For each scheduled operation (``operations.schedule``), the time its latest run
  was due (``last_due``, from its crontab in TIME_ZONE), and the latest task of it
  launched by the schedule. A due run with no such task created since, once
  ``SCHEDULE_GRACE_SECONDS`` have passed, is **late**: alerted once per missed
  run (a Redis ``SET NX`` per operation and due time, so one worker sends it;
  the alert task on the alert queue delivers it once per target). A run due
  before the service was first watched (``watching_since``) is not judged.
- Beat's liveness: the beat holding the lock writes the time of each tick to
  Redis (``operations.beat``); older than ``BEAT_SILENT_SECONDS`` is "beat is not
  running".
- The gauges ``tasksite_operation_last_started_timestamp_seconds``,
  ``…_last_due_…``, ``…_next_due_…``, ``tasksite_operation_late`` and
  ``tasksite_beat_last_tick_timestamp_seconds``, so Prometheus can alert on its own.

The pages and ``GET /operations`` compute the same state on request
(``schedule_state``), with no dependence on the watchdog thread.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo

import redis
from celery import current_app
from django.conf import settings

from tasks import metrics
from tasks.models import Operation, Status, TaskStatus

from . import alerts
from .schedule import cron, operation_schedules

logger = logging.getLogger(__name__)

LATE = "late"
# A run launched a little before its due time (clocks of beat and database apart) counts.
CLOCK_SLACK_SECONDS = 60
# How far back a crontab's latest due time is looked for: four years and a day.
_MAX_DAYS_BACK = 4 * 366 + 1
_ALERT_KEY_NAMESPACE = uuid.UUID("1d4f3b52-6a8e-4d2c-9b77-5f0e3a9c2b10")


def last_due(expression: str, now: datetime) -> datetime | None:
    """The latest time at or before ``now`` the cron ``expression`` fires, in TIME_ZONE.

    Celery's crontab matches a day only when both its day of month and its day of
    week match; so does this.
    """
    schedule = cron(expression)
    zone = ZoneInfo(settings.TIME_ZONE)
    local = now.astimezone(zone)
    minutes = sorted(schedule.minute, reverse=True)
    hours = sorted(schedule.hour, reverse=True)
    for back in range(_MAX_DAYS_BACK):
        day = (local - timedelta(days=back)).date()
        if day.month not in schedule.month_of_year or day.day not in schedule.day_of_month:
            continue
        if (day.isoweekday() % 7) not in schedule.day_of_week:
            continue
        for hour in hours:
            for minute in minutes:
                moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
                if moment <= local:
                    return moment
    return None


def next_due(expression: str, now: datetime) -> datetime:
    schedule = cron(expression)
    schedule.app, schedule.nowfun = current_app._get_current_object(), lambda: now
    zone = ZoneInfo(settings.TIME_ZONE)
    local = now.astimezone(zone)
    return (local + schedule.remaining_estimate(local)).astimezone(zone)


def redis_client() -> redis.Redis | None:
    """The watchdog's Redis (its findings, beat's tick, the due retries); None without."""
    if not settings.REDIS_URL:
        return None
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def _key(name: str) -> str:
    return f"{settings.BEAT_LOCK_KEY}:watchdog:{name}"


_process_started = time.time()


def watching_since() -> float:
    """When the service first watched its schedule (kept in Redis); earlier runs are not judged."""
    client = redis_client()
    if client is None:
        return _process_started
    try:
        client.set(_key("since"), repr(time.time()), nx=True)
        value = cast("bytes | None", client.get(_key("since")))
    except redis.RedisError:
        return _process_started
    return float(value) if value else _process_started


def beat_last_tick() -> float | None:
    """When the beat holding the lock last ticked; None when never seen or unknown."""
    client = redis_client()
    if client is None:
        return None
    try:
        value = cast("bytes | None", client.get(f"{settings.BEAT_LOCK_KEY}:tick"))
    except redis.RedisError:
        return None
    try:
        return float(value) if value else None
    except ValueError:
        return None


def beat_in_words(last_tick: float | None, *, now: float | None = None) -> str:
    """ "beat last seen 3 min ago", or "beat is not running" (never seen, or silent)."""
    if not settings.REDIS_URL:
        return "beat runs inside the service"
    now = time.time() if now is None else now
    if last_tick is None:
        return "beat is not running (never seen)"
    ago = max(now - last_tick, 0)
    words = "just now" if ago < 60 else f"{alerts.duration(ago)} ago"
    if ago > settings.BEAT_SILENT_SECONDS:
        return f"beat is not running (last seen {words})"
    return f"beat last seen {words}"


def beat_running(last_tick: float | None, *, now: float | None = None) -> bool:
    if not settings.REDIS_URL:
        return True
    now = time.time() if now is None else now
    return last_tick is not None and now - last_tick <= settings.BEAT_SILENT_SECONDS


@dataclass(frozen=True)
class ScheduleState:
    operation: str
    last_due: float | None
    next_due: float
    last_started: float | None
    late_since: float | None


def schedule_state(*, now: float | None = None) -> dict[str, ScheduleState]:
    """Each scheduled operation: when its last run was due, started, and whether it is late."""
    now = time.time() if now is None else now
    moment = datetime.fromtimestamp(now, ZoneInfo(settings.TIME_ZONE))
    since = watching_since()
    grace = settings.SCHEDULE_GRACE_SECONDS
    states = {}
    for operation, expression in operation_schedules().items():
        due_at = last_due(expression, moment)
        due = due_at.timestamp() if due_at is not None else None
        started = (
            TaskStatus.objects.filter(operation=operation, launched_by="schedule")
            .order_by("-created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        late = (
            due is not None
            and due >= since
            and now >= due + grace
            and (started is None or started < due - CLOCK_SLACK_SECONDS)
        )
        states[operation] = ScheduleState(
            operation=operation,
            last_due=due,
            next_due=next_due(expression, moment).timestamp(),
            last_started=float(started) if started is not None else None,
            late_since=due if late else None,
        )
    return states


def export(states: dict[str, ScheduleState], last_tick: float | None) -> None:
    if last_tick is not None:
        metrics.BEAT_LAST_TICK.set(last_tick)
    for state in states.values():
        if state.last_started is not None:
            metrics.OPERATION_LAST_STARTED.labels(state.operation).set(state.last_started)
        if state.last_due is not None:
            metrics.OPERATION_LAST_DUE.labels(state.operation).set(state.last_due)
        metrics.OPERATION_NEXT_DUE.labels(state.operation).set(state.next_due)
        metrics.OPERATION_LATE.labels(state.operation).set(1 if state.late_since else 0)


# -- the alert ---------------------------------------------------------------------


def alert_key(event: str, operation: str, when: float) -> str:
    """A stable id in a task's place for ``AlertDelivery`` (one alert per event and run)."""
    return str(uuid.uuid5(_ALERT_KEY_NAMESPACE, f"{event}:{operation}:{int(when)}"))


def compose_late(operation: str, due: float, *, now: float | None = None) -> alerts.Alert:
    now = time.time() if now is None else now
    label = Operation(operation).label if operation in Operation.values else operation
    beat = beat_in_words(beat_last_tick(), now=now)
    details = [
        ("Operation", f"{label} ({operation})"),
        ("Due at", f"{alerts.local_time(due)} ({settings.TIME_ZONE})"),
        ("Late by", alerts.duration(now - due)),
        ("Beat", beat),
    ]
    base = settings.PUBLIC_BASE_URL.rstrip("/")
    if base:
        details.append(("Schedule", f"{base}/schedule"))
    return alerts.Alert(
        subject=f"[tasks] {operation}: scheduled run is late",
        headline=(
            f"The scheduled run of {operation} due at {alerts.local_time(due)} has not "
            f"started within {alerts.duration(settings.SCHEDULE_GRACE_SECONDS)}; {beat}."
        ),
        details=details,
    )


def send_late_alert(operation: str, due: float) -> alerts.Outcome:
    """The late run's alert, once per target, to the routes that alert on ``failed``."""
    subject = alerts.Subject(alert_key(LATE, operation, due), operation)
    return alerts.deliver(subject, LATE, Status.FAILED, compose_late(operation, due))
