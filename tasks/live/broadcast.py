"""The only code that sends task updates towards WebSocket clients.

A change is encoded once (``wire.encode``) into the exact frame every client
receives, and published once: a plain Redis PUBLISH when ``REDIS_URL`` is set
(about 20 times cheaper from sync code than ``async_to_sync(group_send)``), or,
in the embedded default, the in-process hand-off that this process's hub
registered with ``register_hand_off`` when it started. Without a hub (a worker
process, a shell) nothing is handed off: those changes reach clients through
the hub's polling of the database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis
from django.conf import settings

from .. import metrics
from ..models import TaskStatus
from . import wire
from .routes import updates_channel

logger = logging.getLogger(__name__)

_client_lock = threading.Lock()
_client = None
# The hub's in-process hand-off (embedded default): takes a wire message, from any thread.
_hand_off: Callable[[str], None] | None = None


def register_hand_off(hand_off: Callable[[str], None] | None) -> None:
    """The hub's in-process hand-off, used when there is no ``REDIS_URL`` (None: none)."""
    global _hand_off
    _hand_off = hand_off


def redis_client():
    """This process's one Redis client for publishing (also what ``/readyz`` pings)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = redis.Redis.from_url(
                    settings.REDIS_URL,
                    socket_timeout=2,
                    socket_connect_timeout=2,
                    health_check_interval=30,
                )
    return _client


def publish_change(task: TaskStatus) -> None:
    """Send one change out; never raises (the database stays the truth)."""
    try:
        data = wire.encode(task).message
        if settings.REDIS_URL:
            redis_client().publish(updates_channel(), data)
        else:
            hand_off = _hand_off
            if hand_off is not None:
                hand_off(data)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # Redis away: expected in an outage, one line each; clients catch up later.
        logger.warning(
            "broadcast of task %s v%s failed: Redis unavailable (%s)",
            task.task_id,
            task.version,
            exc.__class__.__name__,
        )
        metrics.TRACKER_PUBLISH_FAILURES.inc()
    except Exception:  # anything else is a bug: its traceback is wanted
        logger.exception("broadcast of task %s v%s failed", task.task_id, task.version)
        metrics.TRACKER_PUBLISH_FAILURES.inc()
    else:
        metrics.TRACKER_PUBLISHES.inc()
