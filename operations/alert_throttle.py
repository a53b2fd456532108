"""One alert per operation and failure reason per window, then one summary.

A job that fails every 30 minutes with the same error would alert every 30
minutes. Within ``ALERT_THROTTLE_SECONDS`` of a task's alert, a task of the same
operation ending the same way with the same folded error (``operations.triage``)
is held back; when the window ends, one summary says how many were held back
and since when.

State lives in Redis, so every worker agrees (in-process without Redis, the
embedded default's single process): a key ``…:<reason>`` naming the task that
was alerted (``SET NX EX``: the window), and a sorted set ``…:<reason>:held`` of
the tasks held back, scored by when they ended. A retry of the alerted task's
own delivery is never held back, and holding back is idempotent per task.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

import redis
from django.conf import settings

from .triage import failure_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Held:
    """What a window held back: how many tasks, the latest, and when the first ended."""

    count: int
    latest_task_id: str
    since: float


@dataclass(frozen=True)
class Decision:
    held: bool
    # Held back for the first time (a redelivered message is held back again, not counted).
    new: bool = False
    # Set on the first task held back in a window: when the summary is due (seconds).
    summary_in: float | None = None
    reason: str = ""


def _prefix() -> str:
    # Per alert queue: deployments (and parallel test runs) sharing a Redis stay apart.
    return f"tasksite:{settings.ALERT_QUEUE}:alert-throttle"


def _client() -> redis.Redis | None:
    if not settings.REDIS_URL:
        return None
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


_memory_lock = threading.Lock()
_memory: dict[str, tuple[str, float]] = {}
_memory_held: dict[str, dict[str, float]] = {}


def check(
    task_id: str, operation: str, status: str, error: str | None, ended_at: float
) -> Decision:
    """Whether the alerts of this task are held back; never raises (alerts go out then)."""
    window = int(settings.ALERT_THROTTLE_SECONDS)
    if window <= 0:
        return Decision(False)
    reason = failure_key(operation, status, error)
    key = f"{_prefix()}:{reason}"
    try:
        client = _client()
        if client is None:
            return _check_memory(task_id, key, reason, window, ended_at)
        if client.set(key, task_id, nx=True, ex=window):
            return Decision(False, reason=reason)
        holder = cast("bytes | None", client.get(key))
        if holder is None or holder.decode() == task_id:
            return Decision(False, reason=reason)
        pipe = client.pipeline()
        pipe.zadd(f"{key}:held", {task_id: ended_at}, nx=True)
        pipe.zcard(f"{key}:held")
        pipe.expire(f"{key}:held", window * 2 + 3600)
        pipe.pttl(key)
        added, count, _, ttl_ms = pipe.execute()
    except redis.RedisError as exc:
        logger.warning("alert throttle: Redis unavailable (%s); not holding back", exc)
        return Decision(False)
    first = bool(added) and int(count) == 1
    return Decision(
        True,
        new=bool(added),
        summary_in=max(int(ttl_ms), 0) / 1000 if first else None,
        reason=reason,
    )


def _check_memory(task_id: str, key: str, reason: str, window: int, ended_at: float) -> Decision:
    now = time.time()
    with _memory_lock:
        holder = _memory.get(key)
        if holder is None or holder[1] <= now:
            _memory[key] = (task_id, now + window)
            return Decision(False, reason=reason)
        if holder[0] == task_id:
            return Decision(False, reason=reason)
        held = _memory_held.setdefault(key, {})
        if task_id in held:
            return Decision(True, reason=reason)
        held[task_id] = ended_at
        first = len(held) == 1
        return Decision(
            True, new=True, summary_in=holder[1] - now if first else None, reason=reason
        )


def take_held(reason: str) -> Held | None:
    """The tasks a window held back, removed (the summary is sent once); None if none."""
    key = f"{_prefix()}:{reason}:held"
    client = _client()
    if client is None:
        with _memory_lock:
            found = _memory_held.pop(f"{_prefix()}:{reason}", {})
        items: list[tuple[Any, float]] = sorted(found.items(), key=lambda item: item[1])
    else:
        pipe = client.pipeline()
        pipe.zrange(key, 0, -1, withscores=True)
        pipe.delete(key)
        items = pipe.execute()[0]
    if not items:
        return None
    latest = items[-1][0]
    return Held(
        count=len(items),
        latest_task_id=latest.decode() if isinstance(latest, bytes) else str(latest),
        since=float(items[0][1]),
    )
