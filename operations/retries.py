"""Retries you can see: a run that failed for a passing reason is run again, as a new task.

A failure is transient when the job says so: a source that stayed unreachable
through its own retries (``SourceUnavailable``, ``runner.is_transient``) or the
database lost mid-run (``runner.DATABASE_LOST``). Then, if the operation's policy
(``JOB_RETRY_POLICY``: attempts in all, first wait; off by default for
``email_tips``, which sends mail) allows another attempt, a new task is created at
once (``launched_by`` "retry", ``rerun_of`` the failed one, the same parameters)
and its job is due after the wait, doubled at each attempt.

The job goes out when it is due through ``operations.deferred`` (not a Celery
countdown, which a worker would hold: see there); a retry cancelled meanwhile
is dropped unsent.

So the chain is visible both ways: the failed task's page says "Retry 2 of 3 at
04:45" with a link and a Cancel retry button (the ordinary cancel of the pending
task: a worker that gets its message later finds it over), and the retry's page
says which run it repeats.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from tasks import selectors, tracker
from tasks.models import Status, TaskStatus

from . import alerts, deferred, services, watchdog
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
    deferred.defer(
        f"operations.{task.operation}",
        delay=wait,
        queue=settings.CELERY_TASK_DEFAULT_QUEUE,
        kwargs={"task_id": retry_id, "params": task.params or {}, "request_id": task.request_id},
        task_id=retry_id,
        unless_finished=retry_id,
    )
    logger.warning(
        "task %s: failed for a passing reason; retry %d of %d (%s) in %s",
        task_id,
        attempt + 1,
        rule.attempts,
        retry_id,
        alerts.duration(wait),
    )
    return retry_id


# How long after a failure its retry may take to appear (created by the failing worker
# right after the failure's write, so milliseconds; this is the margin).
RETRY_DECISION_SECONDS = 10.0


def _decided_key(task_id: str) -> str:
    return f"{settings.BEAT_LOCK_KEY}:no-retry:{task_id}"


def after_failure(task_id: str, transient: bool) -> str | None:
    """The runner's word on a failed job: a passing reason is retried (policy allowing);
    any other is recorded as not retried, so that its alert need not wait to know."""
    if transient:
        return schedule_retry(task_id)
    client = watchdog.redis_client()
    if client is not None:
        client.set(_decided_key(task_id), "1", ex=24 * 3600)
    return None


def retry_follows(task_id: str, *, now: float | None = None) -> bool | None:
    """Whether a failed run is followed by a retry: True (one exists: its own end is what
    to tell), False (none will), or None (its policy allows one and the failure is too
    recent to know yet)."""
    task = selectors.get_task(task_id)
    if task is None or task.status != Status.FAILED:
        return False
    if TaskStatus.objects.filter(rerun_of=task.task_id, launched_by=RETRY).exists():
        return True
    if attempt_of(task) >= policy(task.operation).attempts:
        return False
    client = watchdog.redis_client()
    if client is not None and client.exists(_decided_key(task_id)):
        return False
    now = time.time() if now is None else now
    return None if now - task.updated_at < RETRY_DECISION_SECONDS else False


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
