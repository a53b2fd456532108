"""Retries you can see: a run that failed for a passing reason is run again, as a new task.

A failure is transient when the job says so: a source that stayed unreachable
through its own retries (``SourceUnavailable``, ``runner.is_transient``) or the
database lost mid-run (``runner.DATABASE_LOST``). Then, if the operation's policy
(``JOB_RETRY_POLICY``: attempts in all, first wait; off by default for
``email_tips``, which sends mail) allows another attempt, a new task is created at
once (``launched_by`` "retry", ``rerun_of`` the failed one, the same parameters)
and its job is due after the wait, doubled at each attempt.

The job is not sent with a Celery countdown: a worker takes such a message at
once and holds it unacknowledged until its time, and a worker whose broker
connection drops while it holds one dies restoring it (kombu's Redis transport;
a real outage test found it). Instead the retry's due time goes into a Redis
sorted set, and every worker's watchdog thread (``operations.watch``) sends what
is due; ``ZREM`` decides which one sends it. Without Redis (the embedded
default, one process and an in-memory broker) the countdown is used.

So the chain is visible both ways: the failed task's page says "Retry 2 of 3 at
04:45" with a link and a Cancel retry button (the ordinary cancel of the pending
task: a worker that gets its message later finds it over), and the retry's page
says which run it repeats.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, cast

from celery import current_app
from django.conf import settings

from tasks import selectors, tracker
from tasks.models import Status, TaskStatus

from . import alerts, services, watchdog
from .models import JobRun

logger = logging.getLogger(__name__)

RETRY = "retry"
# A pending retry is a ``started`` task: it must run before the stale check fails it.
STALE_MARGIN_SECONDS = 120


@dataclass(frozen=True)
class Policy:
    attempts: int  # in all, the first run included: 1 is no retry
    backoff: float  # seconds before the first retry, doubled for each next one


def policy(operation: str) -> Policy:
    attempts, backoff = settings.JOB_RETRY_POLICY.get(operation, (1, 0.0))
    return Policy(max(int(attempts), 1), max(float(backoff), 0.0))


def attempt_of(task: TaskStatus) -> int:
    """1 for a first run; n for the (n-1)th automatic retry of one."""
    attempt, current = 1, task
    while current.launched_by == RETRY and current.rerun_of is not None and attempt < 100:
        parent = TaskStatus.objects.filter(pk=current.rerun_of).first()
        if parent is None:
            break
        attempt, current = attempt + 1, parent
    return attempt


def wait_before(attempt: int, rule: Policy, operation: str) -> float:
    """Seconds before attempt ``attempt + 1``, kept under the stale bound."""
    bound = tracker.stale_bound(operation) - STALE_MARGIN_SECONDS
    return min(rule.backoff * 2 ** (attempt - 1), bound)


def schedule_retry(task_id: str) -> str | None:
    """After a transient failure: the retry task's id, or None when the policy is spent."""
    task = selectors.get_task(task_id)
    if task is None or task.status != Status.FAILED:
        return None
    rule = policy(task.operation)
    attempt = attempt_of(task)
    if attempt >= rule.attempts:
        return None
    existing = TaskStatus.objects.filter(rerun_of=task.task_id, launched_by=RETRY).first()
    if existing is not None:
        return str(existing.task_id)
    launched = services.launch_task(
        task.operation,
        task.params or {},
        launched_by=RETRY,
        rerun_of=str(task.task_id),
        request_id=task.request_id or None,
        send=False,
    )
    retry_id = str(launched.task.task_id)
    wait = max(wait_before(attempt, rule, task.operation), 0.0)
    client = watchdog.redis_client()
    if client is None:
        _send(launched.task, countdown=wait)
    else:
        client.zadd(_due_key(), {retry_id: time.time() + wait})
    logger.warning(
        "task %s: failed for a passing reason; retry %d of %d (%s) in %s",
        task_id,
        attempt + 1,
        rule.attempts,
        retry_id,
        alerts.duration(wait),
    )
    return retry_id


def _due_key() -> str:
    return f"{settings.BEAT_LOCK_KEY}:retries-due"


def _send(task: TaskStatus, *, countdown: float | None = None) -> None:
    current_app.send_task(
        f"operations.{task.operation}",
        kwargs={
            "task_id": str(task.task_id),
            "params": task.params or {},
            "request_id": task.request_id or None,
        },
        task_id=str(task.task_id),
        countdown=countdown,
        queue=settings.CELERY_TASK_DEFAULT_QUEUE,
    )


def send_due(*, now: float | None = None) -> int:
    """Send the retries whose time has come (the watchdog's thread, in every worker):
    each once, whichever worker removes it from the set; one cancelled meanwhile is
    dropped. A send the broker refuses goes back into the set for the next look."""
    client = watchdog.redis_client()
    if client is None:
        return 0
    now = time.time() if now is None else now
    sent = 0
    due = cast("list[bytes]", client.zrangebyscore(_due_key(), "-inf", now))
    for member in due:
        if not client.zrem(_due_key(), member):
            continue  # another worker's
        task_id = member.decode() if isinstance(member, bytes) else str(member)
        task = selectors.get_task(task_id)
        if task is None or task.is_terminal:
            continue
        try:
            _send(task)
        except Exception:
            client.zadd(_due_key(), {task_id: now})
            raise
        sent += 1
    return sent


def chain(task: TaskStatus) -> dict[str, Any]:
    """What the task page says about retries: the retry of this run, and what this repeats."""
    found: dict[str, Any] = {}
    rule = policy(task.operation)
    retry = TaskStatus.objects.filter(rerun_of=task.task_id, launched_by=RETRY).first()
    if retry is not None:
        attempt = attempt_of(retry)
        pending = (
            retry.status == Status.STARTED
            and not JobRun.objects.filter(task_id=str(retry.task_id)).exists()
        )
        at = task.updated_at + wait_before(attempt - 1, rule, task.operation)
        found["retry"] = {
            "task_id": str(retry.task_id),
            "attempt": attempt,
            "of": rule.attempts,
            "at": alerts.local_time(at)[-5:],
            "pending": pending,
            "status": retry.status.replace("_", " "),
        }
    if task.launched_by == RETRY and task.rerun_of is not None:
        found["repeats"] = {
            "task_id": str(task.rerun_of),
            "attempt": attempt_of(task),
            "of": rule.attempts,
        }
    return found
