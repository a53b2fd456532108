"""What runs next, what ran last, who is working: the operations page and ``GET /operations``.

Schedules come from the beat schedule (``operations.schedule``), in words and
in ``TIME_ZONE``, with what is late (``operations.watchdog``); the last run and
the history from the task table (through
``tasks.selectors``, so a user's hidden operations stay hidden); the job
runners from the workers themselves (a Celery ``inspect``, bounded by a short
timeout and cached a few seconds), their leases (``JobRun``: what each is
running) and the broker's queue.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

import redis
from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import connection, connections
from django.utils import timezone

from tasks import selectors
from tasks.models import TERMINAL_STATUSES, Operation, TaskStatus

from . import alerts, triage, watchdog
from .models import JobRun
from .registry import OPERATIONS
from .schedule import cron, operation_schedules

logger = logging.getLogger(__name__)

HISTORY_RUNS = 30
INSPECT_TIMEOUT = 1.0
WORKERS_CACHE_SECONDS = 5
SNAPSHOT_KEPT_SECONDS = 60
_SNAPSHOT_KEY = "operations.overview.runners"
_renewing = threading.Lock()
DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def in_words(expression: str) -> str:
    """A cron expression as staff say it ("every day at 04:30"); unusual ones as cron."""
    minute, hour, dom, month, dow = expression.split()
    at = f"{int(hour):02d}:{int(minute):02d}" if minute.isdigit() and hour.isdigit() else None
    if at and dom == "*" and month == "*":
        if dow == "*":
            return f"every day at {at}"
        if dow.isdigit():
            return f"every {DAYS[int(dow) % 7]} at {at}"
        if dow == "1-5":
            return f"every weekday at {at}"
    if minute.startswith("*/") and (hour, dom, month, dow) == ("*", "*", "*", "*"):
        return f"every {minute[2:]} minutes"
    return f"cron {expression}"


def next_run(expression: str, now: datetime | None = None) -> datetime:
    """When beat next sends it, in TIME_ZONE."""
    zone = ZoneInfo(settings.TIME_ZONE)
    now = (now or timezone.now()).astimezone(zone)
    schedule = cron(expression)
    schedule.app, schedule.nowfun = current_app._get_current_object(), lambda: now
    return (now + schedule.remaining_estimate(now)).astimezone(zone)


def _run_summary(task: TaskStatus | None) -> dict[str, Any] | None:
    if task is None:
        return None
    return {
        "task_id": str(task.task_id),
        "status": task.status,
        "created_at": int(task.created_at),
        "updated_at": int(task.updated_at),
        "duration": round(task.updated_at - task.created_at, 1)
        if task.status in TERMINAL_STATUSES
        else None,
        "url": f"/tasks/{task.task_id}",
    }


def operations(hidden: frozenset[str], *, can_run: bool) -> list[dict[str, Any]]:
    """The operations this reader may see: schedule, next run, last run, launchable."""
    planned = operation_schedules()
    states = watchdog.schedule_state()
    out = []
    for value, label in Operation.choices:
        if value in hidden:
            continue
        spec = OPERATIONS[value]
        schedule = planned.get(value)
        last = selectors.list_tasks(operation=value, limit=1, hidden=hidden)
        out.append(
            {
                "operation": value,
                "label": label,
                "description": spec.description,
                "schedule": in_words(schedule) if schedule is not None else None,
                "next_run": next_run(schedule).isoformat() if schedule is not None else None,
                "late_since": _late_since(states.get(value)),
                "last_run": _run_summary(last[0] if last else None),
                "can_launch": bool(can_run and spec.available),
            }
        )
    return out


def _late_since(state: watchdog.ScheduleState | None) -> int | None:
    return int(state.late_since) if state is not None and state.late_since is not None else None


def schedule_problems(
    states: dict[str, watchdog.ScheduleState], last_tick: float | None, *, now: float
) -> list[str]:
    """Late scheduled runs and a beat that went silent, in words (``operations.watchdog``)."""
    problems = [
        f"The scheduled run of {state.operation} due at "
        f"{alerts.local_time(state.late_since)} has not started."
        for state in states.values()
        if state.late_since is not None
    ]
    # A beat never seen is not said here: its runs will show late soon enough.
    if last_tick is not None and not watchdog.beat_running(last_tick, now=now):
        words = watchdog.beat_in_words(last_tick, now=now)
        problems.append(f"{words[0].upper()}{words[1:]}: scheduled runs will not start.")
    return problems


def runners(*, wait: bool = True) -> dict[str, Any]:
    """Live workers, the queue's depth, the beat lock's holder, and what is wrong.

    Asking the workers costs up to INSPECT_TIMEOUT (a broadcast waits for every
    answer it might get), so a snapshot is kept WORKERS_CACHE_SECONDS. The
    schedule page and its API ``wait`` for a fresh one; the monitor's header
    (``wait=False``) takes one up to SNAPSHOT_KEPT_SECONDS old and has it renewed
    in the background, so that the page staff keep open never stalls on it.
    """
    kept = cache.get(_SNAPSHOT_KEY)
    fresh = kept is not None and time.time() - kept["taken_at"] < WORKERS_CACHE_SECONDS
    if fresh:
        return kept["snapshot"]
    if kept is not None and not wait:
        _renew_in_background()
        return kept["snapshot"]
    return _take_snapshot()


def _take_snapshot() -> dict[str, Any]:
    snapshot = _look_at_runners()
    cache.set(_SNAPSHOT_KEY, {"taken_at": time.time(), "snapshot": snapshot}, SNAPSHOT_KEPT_SECONDS)
    return snapshot


def _renew_in_background() -> None:
    if not _renewing.acquire(blocking=False):
        return  # one renewal at a time per process

    def renew() -> None:
        try:
            _take_snapshot()
        except Exception:
            logger.warning("the workers' snapshot could not be renewed", exc_info=True)
        finally:
            connections.close_all()  # this thread's own database connection
            _renewing.release()

    threading.Thread(target=renew, name="runners-snapshot", daemon=True).start()


def _look_at_runners() -> dict[str, Any]:
    workers: dict[str, dict[str, Any]] = {}
    reachable = True
    try:
        # Only the workers that take this deployment's queue: another deployment (or
        # test run) sharing the broker answers an inspect too.
        queues = current_app.control.inspect(timeout=INSPECT_TIMEOUT).active_queues() or {}
        ours = sorted(
            name
            for name, taken in queues.items()
            if any(queue.get("name") == settings.CELERY_TASK_DEFAULT_QUEUE for queue in taken or [])
        )
        stats = (
            # addressed to known workers: done as soon as each has answered
            current_app.control.inspect(
                timeout=INSPECT_TIMEOUT, destination=ours, limit=len(ours)
            ).stats()
            or {}
            if ours
            else {}
        )
    except Exception as exc:  # the broker is down: say so, never fail the page
        logger.warning("workers could not be asked: %s", exc.__class__.__name__)
        stats, reachable = {}, False
    now = time.time()
    for name, info in sorted(stats.items()):
        uptime = info.get("uptime") if isinstance(info, dict) else None
        workers[name] = {
            "name": name,
            "since": int(now - uptime) if uptime else None,
            "running": [],
        }
    for run in JobRun.objects.filter(
        finished_at__isnull=True, lease_until__gt=timezone.now()
    ).order_by("started_at"):
        owner = next((name for name in workers if run.worker.startswith(f"{name}:")), None)
        entry = {
            "task_id": run.task_id,
            "operation": run.operation,
            "since": int(run.started_at.timestamp()),
        }
        if owner is not None:
            workers[owner]["running"].append(entry)
    depth = _queue_depth()
    problems = []
    if not reachable:
        problems.append("The job queue cannot be reached: launches fail until it is back.")
    elif not workers:
        problems.append(
            "No worker is running: a task that is started will not move until one starts."
        )
    elif depth and not any(worker["running"] for worker in workers.values()):
        problems.append(f"{depth} job(s) wait in the queue and no worker is taking them.")
    last_tick = watchdog.beat_last_tick()
    problems += schedule_problems(watchdog.schedule_state(now=now), last_tick, now=now)
    return {
        "workers": list(workers.values()),
        "queue": {"name": settings.CELERY_TASK_DEFAULT_QUEUE, "waiting": depth},
        "beat": _beat_holder(),
        "beat_last_seen": int(last_tick) if last_tick is not None else None,
        "beat_status": watchdog.beat_in_words(last_tick, now=now),
        "problems": problems,
        "checked_at": int(now),
    }


def _queue_depth() -> int | None:
    if not settings.REDIS_URL:
        return None  # the embedded default's in-memory broker has no queue to look at
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        # redis.Redis is the synchronous client: its commands return values, never the
        # awaitables that redis-py's shared annotations also allow for.
        return int(cast(int, client.llen(settings.CELERY_TASK_DEFAULT_QUEUE)))
    except redis.RedisError:
        return None


def _beat_holder() -> str | None:
    if not settings.REDIS_URL:
        return "embedded"
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        # The synchronous client (no decode_responses): bytes or None, never an awaitable.
        holder = cast("bytes | None", client.get(f"{settings.BEAT_LOCK_KEY}:lock"))
    except redis.RedisError:
        return None
    return holder.decode(errors="replace").rsplit(":", 1)[0] if holder else None


def stats(operation: str, *, hidden: frozenset[str]) -> dict[str, Any] | None:
    """The last runs of ``operation`` and their figures, computed in the database (one
    query on PostgreSQL, over the ``operation, created_at`` index); None when hidden."""
    if operation in hidden or operation not in Operation.values:
        return None
    if connection.vendor == "postgresql":
        runs, median, p95 = _stats_postgresql(operation)
    else:
        runs = _recent_runs(operation)
        durations = sorted(r["duration"] for r in runs)
        median = statistics.median(durations) if durations else None
        p95 = _percentile(durations, 0.95)
    count = len(runs)
    return {
        "operation": operation,
        "runs": runs,
        "count": count,
        "median_duration": round(median, 1) if median is not None else None,
        "p95_duration": round(p95, 1) if p95 is not None else None,
        "failed_share": round(sum(r["status"] == "failed" for r in runs) / count, 3)
        if count
        else None,
        "failure_groups": triage.failure_groups(operation),
        "with_errors_share": round(
            sum(r["status"] == "completed_with_errors" for r in runs) / count, 3
        )
        if count
        else None,
    }


def _stats_postgresql(operation: str) -> tuple[list[dict[str, Any]], float | None, float | None]:
    table = connection.ops.quote_name(TaskStatus._meta.db_table)
    terminal = sorted(TERMINAL_STATUSES)
    sql = (
        f"WITH recent AS (SELECT task_id, status, created_at, updated_at, "
        f"updated_at - created_at AS duration FROM {table} "
        f"WHERE operation = %s AND expires_at > %s AND status IN (%s, %s, %s) "
        f"ORDER BY created_at DESC, task_id DESC LIMIT %s) "
        f"SELECT coalesce(json_agg(json_build_object('task_id', task_id, 'status', status, "
        f"'created_at', created_at, 'duration', duration) ORDER BY created_at DESC), '[]'), "
        f"percentile_cont(0.5) WITHIN GROUP (ORDER BY duration), "
        f"percentile_cont(0.95) WITHIN GROUP (ORDER BY duration) FROM recent"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [operation, time.time(), *terminal, HISTORY_RUNS])
        rows, median, p95 = cursor.fetchone()
    if isinstance(rows, str):
        rows = json.loads(rows)
    runs = [
        {
            "task_id": str(r["task_id"]),
            "status": r["status"],
            "created_at": int(r["created_at"]),
            "duration": round(float(r["duration"]), 1),
            "url": f"/tasks/{r['task_id']}",
        }
        for r in rows
    ]
    return runs, median, p95


def _recent_runs(operation: str) -> list[dict[str, Any]]:
    tasks = selectors.list_tasks(
        operation=operation, statuses=sorted(TERMINAL_STATUSES), limit=HISTORY_RUNS
    )
    return [
        {
            "task_id": str(t.task_id),
            "status": t.status,
            "created_at": int(t.created_at),
            "duration": round(t.updated_at - t.created_at, 1),
            "url": f"/tasks/{t.task_id}",
        }
        for t in tasks
    ]


def _percentile(ordered: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, as PostgreSQL's percentile_cont."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def runners_for(hidden: frozenset[str], *, wait: bool = True) -> dict[str, Any]:
    """``runners`` as one reader may see it: the snapshot is shared by every reader, so a
    hidden operation's running tasks are taken out per reader, never cached for all."""
    snapshot = runners(wait=wait)
    if not hidden:
        return snapshot
    return {
        **snapshot,
        "workers": [
            {**worker, "running": [r for r in worker["running"] if r["operation"] not in hidden]}
            for worker in snapshot["workers"]
        ],
    }
