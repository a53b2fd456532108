"""Messages sent later, without a Celery countdown.

A countdown (ETA) message is taken by a worker at once and held unacknowledged
until its time; a worker whose Redis connection drops while it holds one dies
restoring it (kombu's Redis transport: the outage tests found it), and the held
message then waits out the visibility timeout. So what must go out later (a job's
retry, an alert's next try) waits here instead: in a Redis sorted set scored by
its due time, from which every worker's watchdog thread (``operations.watch``)
sends what is due at each look. ``ZREM`` decides which worker sends an entry, so
it goes out once. An entry may name a task that must still be unfinished for it
to go (a retry cancelled meanwhile is dropped). Without Redis (the embedded
default: one process, an in-memory broker) the countdown is used.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, cast

from celery import current_app
from django.conf import settings

from tasks import selectors

from . import watchdog

logger = logging.getLogger(__name__)


def _key() -> str:
    return f"{settings.BEAT_LOCK_KEY}:deferred"


def defer(
    name: str,
    *,
    delay: float,
    queue: str,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    task_id: str | None = None,
    retries: int = 0,
    unless_finished: str | None = None,
) -> None:
    """Send the Celery task ``name`` in ``delay`` seconds (``task_id``: its message id;
    ``retries``: what ``request.retries`` says; ``unless_finished``: dropped if that
    task has ended by then)."""
    message = {
        "name": name,
        "args": args or [],
        "kwargs": kwargs or {},
        "queue": queue,
        "task_id": task_id,
        "retries": retries,
        "unless_finished": unless_finished,
    }
    client = watchdog.redis_client()
    if client is None:
        _send(message, countdown=max(delay, 0.0))
        return
    member = json.dumps({**message, "nonce": uuid.uuid4().hex}, sort_keys=True)
    client.zadd(_key(), {member: time.time() + max(delay, 0.0)})


def pending(name: str | None = None) -> list[tuple[dict[str, Any], float]]:
    """What waits, with its due time (``name``: of that task only)."""
    client = watchdog.redis_client()
    if client is None:
        return []
    found = cast("list[tuple[bytes, float]]", client.zrange(_key(), 0, -1, withscores=True))
    entries = [(json.loads(member), due) for member, due in found]
    return [(entry, due) for entry, due in entries if name is None or entry["name"] == name]


def send_due(*, now: float | None = None) -> int:
    """Send each entry whose time has come, once (whichever worker removes it); an entry
    whose task has ended is dropped; a send the broker refuses goes back for the next
    look."""
    client = watchdog.redis_client()
    if client is None:
        return 0
    now = time.time() if now is None else now
    sent = 0
    for member in cast("list[bytes]", client.zrangebyscore(_key(), "-inf", now)):
        if not client.zrem(_key(), member):
            continue  # another worker's
        message = json.loads(member)
        unless = message.get("unless_finished")
        if unless:
            task = selectors.get_task(unless)
            if task is None or task.is_terminal:
                continue
        try:
            _send(message)
        except Exception:
            client.zadd(_key(), {member: now})
            raise
        sent += 1
    return sent


def _send(message: dict[str, Any], *, countdown: float | None = None) -> None:
    current_app.send_task(
        message["name"],
        args=message["args"],
        kwargs=message["kwargs"],
        task_id=message.get("task_id"),
        queue=message["queue"],
        retries=int(message.get("retries") or 0),
        countdown=countdown,
    )
