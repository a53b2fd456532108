"""Runs one job for one task inside a Celery worker: lease, heartbeat, tracker, outcome.

What happens when a worker dies mid-job (the deliberate answer, see docs/jobs.md):
the task ends ``failed`` with "worker lost" within a bounded time, and is not
re-run. A running job holds a lease (``JobRun.lease_until``) renewed every
JOB_HEARTBEAT_SECONDS by a thread of its process. When the process dies the
lease runs out after JOB_LEASE_SECONDS, and ``reap_lost_jobs`` (on beat, every
WORKER_LOST_CHECK_SECONDS) fails the task. The unacknowledged message (acks_late)
comes back after the visibility timeout; its delivery finds the run over and
only acknowledges it. Re-running a half-done job automatically could export
twice to systems we do not control; a person re-launches instead, and every
job is idempotent, so that is always safe.

The same lease makes a duplicate delivery of a message that is still running
elsewhere a no-op, so one task is never run twice at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from tasks import metrics, selectors, tracker
from tasks.logging import operation_var, request_id_var, task_id_var
from tasks.models import TaskStatus

from .jobs import JobFailed
from .models import JobRun
from .registry import OPERATIONS
from .sources import SourceUnavailable

logger = logging.getLogger(__name__)

WORKER_LOST = "worker lost"
CANCELLED = "cancelled"
DATABASE_LOST = "database lost"


def worker_label(hostname: str | None = None) -> str:
    return f"{hostname or socket.gethostname()}:{os.getpid()}"


def _lease_end() -> Any:
    return timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS)


def _fail_task(task_id: str, message: str) -> bool:
    """End the task ``failed`` with ``message`` unless it already ended; True if this did.

    A ``DatabaseUnavailable`` from ``fail`` is raised after the block, not through it:
    through it, the handle would spend another retry window failing the task with that
    error's own text instead of ``message``.
    """
    try:
        with tracker.open_task(task_id) as handle:
            if handle.is_terminal:
                return False
            try:
                handle.fail(message)
            except tracker.DatabaseUnavailable as exc:
                unavailable = exc
            else:
                return True
    except (tracker.TaskNotFound, tracker.TaskAlreadyFinished):
        return False
    raise unavailable


def claim(task_id: str, operation: str, worker: str) -> JobRun | None:
    """Take the lease of a task, or None when it ran, runs elsewhere, or its worker died.

    Rides out a database outage like ``finish``: raising here would fail the Celery task,
    whose message is acknowledged all the same (acks_late), and leave the task ``started``
    until the liveness bound failed it for the wrong reason. When the database stays away
    for JOB_DATABASE_WAIT_SECONDS the job is not run, and the task ends ``failed`` with
    the database reason once the database is back.
    """
    waits = _database_backoff()
    retrying = False
    while True:
        try:
            run, dead_worker = _take_lease(task_id, operation, worker, retrying=retrying)
            break
        except tracker.DATABASE_ERRORS as exc:
            connection.close()
            delay = next(waits, None)
            if delay is None:
                _fail_once_database_is_back(task_id, exc)
                return None
            logger.warning(
                "task %s: lease not taken, the database is unreachable (%s); retrying in %gs",
                task_id,
                exc.__class__.__name__,
                delay,
            )
            time.sleep(delay)
            retrying = True
    if dead_worker is not None:
        logger.warning("task %s: redelivered after its worker %s died", task_id, dead_worker)
        metrics.JOBS_WORKER_LOST.labels(operation, "redelivery").inc()
        message = f"{WORKER_LOST}: {dead_worker} stopped while running the job"
        if not _record_failure(task_id, message):
            logger.error("task %s: could not record its failure; the database stayed away", task_id)
    return run


def _take_lease(
    task_id: str, operation: str, worker: str, *, retrying: bool
) -> tuple[JobRun | None, str | None]:
    """One try of ``claim``: the run to execute (or None), and the dead worker found (or None).

    When ``retrying``, an earlier try may have committed before its connection broke, so
    an unfinished run held by this worker is its own lease, not a duplicate delivery (nor,
    once the lease ran out during the outage, a dead worker's).
    """
    now = timezone.now()
    with transaction.atomic():
        run, created = JobRun.objects.select_for_update().get_or_create(
            task_id=task_id,
            defaults={
                "operation": operation,
                "worker": worker,
                "lease_until": _lease_end(),
                "attempts": 1,
            },
        )
        if created:
            return run, None
        if retrying and run.finished_at is None and run.worker == worker:
            run.lease_until = _lease_end()
            run.save(update_fields=["lease_until"])
            return run, None
        if run.finished_at is not None:
            logger.info("task %s already ran (%s); delivery acknowledged", task_id, run.outcome)
            return None, None
        if run.lease_until > now:
            logger.warning(
                "task %s is running on %s; duplicate delivery ignored", task_id, run.worker
            )
            return None, None
        run.finished_at = now
        run.outcome = WORKER_LOST
        run.attempts += 1
        run.save(update_fields=["finished_at", "outcome", "attempts"])
        return None, run.worker


def cancel(task_id: str, *, by: str) -> TaskStatus:
    """Cancel a run: one no worker has taken yet ends now, a running one at its next step.

    The request is stored first, so a worker that takes the job in the
    meantime sees it at its first progress step. Then the run's lease row is
    taken for good, already finished, when no worker holds it: a worker that
    receives the message later finds the run over and only acknowledges it
    (``claim``), so a queued task never sits ``started`` waiting for a worker
    that may be hours away or never come.
    """
    task = tracker.request_cancel(task_id, by=by)
    now = timezone.now()
    _, created = JobRun.objects.get_or_create(
        task_id=str(task.task_id),
        defaults={
            "operation": task.operation,
            "lease_until": now,
            "finished_at": now,
            "outcome": CANCELLED,
        },
    )
    metrics.JOBS_CANCELLED.labels(task.operation, "queued" if created else "running").inc()
    if not created:
        return task  # a worker has it: the job stops at its next progress step
    _fail_task(str(task.task_id), f"cancelled by {task.cancel_requested_by} before it started")
    logger.info(
        "task %s: cancelled by %s before any worker took it", task.task_id, task.cancel_requested_by
    )
    return selectors.get_task(str(task.task_id)) or task


def finish(run: JobRun, outcome: str) -> None:
    for delay in _database_backoff():
        try:
            JobRun.objects.filter(pk=run.pk, finished_at__isnull=True).update(
                finished_at=timezone.now(), outcome=outcome[:32]
            )
            return
        except tracker.DATABASE_ERRORS:
            connection.close()
            time.sleep(delay)
    logger.error("task %s: run not marked finished; the database stayed away", run.task_id)


def _database_backoff() -> Iterator[float]:
    """Waits between tries while the database is away, for at most JOB_DATABASE_WAIT_SECONDS."""
    deadline = time.monotonic() + settings.JOB_DATABASE_WAIT_SECONDS
    delay = 0.5
    yield delay
    while time.monotonic() + delay < deadline:
        yield delay
        delay = min(delay * 2, 5.0)


def _fail_once_database_is_back(task_id: str, exc: BaseException) -> None:
    """End the task ``failed`` with the real reason as soon as the database answers again."""
    reason = exc.__class__.__name__ if not isinstance(exc, tracker.DatabaseUnavailable) else exc
    message = f"the job lost its database ({reason}); it stopped and can be run again"
    logger.warning("task %s: %s", task_id, message)
    connection.close()
    if not _record_failure(task_id, message):
        logger.error("task %s: could not record its failure; the database stayed away", task_id)


def _record_failure(task_id: str, message: str) -> bool:
    """``_fail_task``, retried while the database is away; False if it stayed away.

    ``DatabaseUnavailable`` counts as away: a flapping database can answer the read that
    opens the task and then drop the write for longer than the tracker retries it.
    """
    for delay in _database_backoff():
        try:
            _fail_task(task_id, message)
            return True
        except tracker.DATABASE_ERRORS + (tracker.DatabaseUnavailable,):
            connection.close()
            time.sleep(delay)
    return False


class Heartbeat(threading.Thread):
    """Renews the lease while the job runs, even when the job is blocked in I/O."""

    def __init__(self, run: JobRun) -> None:
        super().__init__(name=f"lease-{run.task_id}", daemon=True)
        self.run_id = run.pk
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(settings.JOB_HEARTBEAT_SECONDS):
                try:
                    JobRun.objects.filter(pk=self.run_id, finished_at__isnull=True).update(
                        lease_until=_lease_end()
                    )
                except tracker.DATABASE_ERRORS as exc:  # survivable; the lease has slack
                    logger.warning("lease renewal failed (%s)", exc.__class__.__name__)
                    connection.close()
                except Exception:
                    logger.exception("lease renewal failed")
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def is_transient(exc: BaseException | None) -> bool:
    """The job failed for a passing reason: its cause chain holds ``SourceUnavailable``."""
    for _ in range(10):
        if exc is None:
            return False
        if isinstance(exc, SourceUnavailable):
            return True
        exc = exc.__cause__
    return False


def run_task(
    operation: str,
    task_id: str,
    params: dict[str, Any],
    *,
    request_id: str | None = None,
    worker: str | None = None,
    on_failed: Callable[[str, bool], object] | None = None,
) -> str:
    """Run the job of ``task_id`` once; returns the outcome (never raises for job errors).

    ``on_failed(task_id, transient)`` is called once the job has ended ``failed``,
    ``transient`` when for a passing reason (a source unavailable, the database lost):
    ``operations.retries`` retries those and records that the others are not.
    """
    token = request_id_var.set(request_id or "-")
    # Every log line of the run, ours and the job's, names its task.
    task_token, operation_token = task_id_var.set(task_id), operation_var.set(operation)
    try:
        run = claim(task_id, operation, worker or worker_label())
        if run is None:
            return "skipped"
        heartbeat = Heartbeat(run)
        heartbeat.start()
        outcome = "failed"
        logger.info("task %s: %s started on %s", task_id, operation, run.worker)
        metrics.JOBS_STARTED.labels(operation).inc()
        began = time.monotonic()
        transient = False
        try:
            outcome, transient = _execute(OPERATIONS[operation], task_id, params)
        except tracker.DATABASE_ERRORS + (tracker.DatabaseUnavailable,) as exc:
            # Not "worker lost": this worker is alive and says why, once it can.
            outcome, transient = DATABASE_LOST, True
            _fail_once_database_is_back(task_id, exc)
        finally:
            heartbeat.stop()
            finish(run, outcome)
            logger.info("task %s: %s ended %s", task_id, operation, outcome)
            metrics.JOBS_FINISHED.labels(operation, outcome).inc()
            metrics.JOB_DURATION.labels(operation).observe(time.monotonic() - began)
        if on_failed is not None and (transient or outcome == "failed"):
            try:
                on_failed(task_id, transient)
            except Exception:  # a retry not scheduled must not fail the message
                logger.exception("task %s: its retry could not be scheduled", task_id)
        return outcome
    finally:
        request_id_var.reset(token)
        task_id_var.reset(task_token)
        operation_var.reset(operation_token)


def _execute(spec: Any, task_id: str, params: dict[str, Any]) -> tuple[str, bool]:
    """The outcome, and whether a failure was transient."""
    try:
        with tracker.open_task(task_id) as handle:
            if handle.is_terminal:
                return "skipped", False
            if spec.job is None:
                raise JobFailed(f"{spec.name} is not available")
            serializer = spec.params_serializer(data=params or {})
            if not serializer.is_valid():
                raise JobFailed(f"invalid parameters: {serializer.errors}")
            try:
                result = spec.job(handle, dict(serializer.validated_data))
            except SoftTimeLimitExceeded as exc:
                raise JobFailed(
                    f"stopped after JOB_MAX_SECONDS ({settings.JOB_MAX_SECONDS}s)"
                ) from exc
            handle.complete(result)
            return handle.status, False
    except tracker.TaskNotFound:
        logger.warning("task %s does not exist (expired?); nothing to run", task_id)
        return "missing", False
    except tracker.TaskCancelled as exc:
        logger.info("task %s %s", task_id, exc)
        return "cancelled", False
    except tracker.TaskAlreadyFinished as exc:
        logger.warning("task %s ended elsewhere while running: %s", task_id, exc)
        return "ended elsewhere", False
    except (JobFailed, ValidationError) as exc:
        logger.warning("task %s failed: %s", task_id, exc)
        return "failed", is_transient(exc)
    except tracker.DATABASE_ERRORS + (tracker.DatabaseUnavailable,):
        raise  # run_task records why once the database is back
    except Exception:
        logger.exception("task %s failed with an unexpected error", task_id)
        return "failed", False


def reap_lost_jobs() -> int:
    """Fail every task whose worker stopped renewing its lease; returns how many."""
    now = timezone.now()
    reaped = 0
    for run in JobRun.objects.filter(finished_at__isnull=True, lease_until__lt=now):
        taken = JobRun.objects.filter(
            pk=run.pk, finished_at__isnull=True, lease_until__lt=now
        ).update(finished_at=now, outcome=WORKER_LOST)
        if taken and _fail_task(
            run.task_id,
            f"{WORKER_LOST}: {run.worker} stopped renewing its lease while running the job",
        ):
            reaped += 1
            logger.warning("task %s: %s (%s)", run.task_id, WORKER_LOST, run.worker)
            metrics.JOBS_WORKER_LOST.labels(run.operation, "reaper").inc()
    return reaped
