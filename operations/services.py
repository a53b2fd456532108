"""Launching and cancelling runs: the one implementation.

The REST API (and through it the monitor), the admin's cancel action,
``run_operation`` and beat's scheduled launches all come here. Refusals are
``operations.errors``, which the API maps to HTTP in ``tasks.exceptions``;
parameter errors are the operation's own serializer's ``ValidationError``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from kombu.exceptions import OperationalError as BrokerUnreachable
from rest_framework import serializers

from tasks import selectors, tracker
from tasks.launcher import Launched
from tasks.models import IdempotencyKey, TaskStatus

from . import registry, runner
from .errors import KeyReused, LaunchInProgress, NoSuchTask, NotAllowed, QueueUnavailable

__all__ = ["Launched", "NoSuchTask", "cancel_task", "enqueue", "launch", "launch_task"]

logger = logging.getLogger(__name__)

# What a broker that is down raises through Celery's send (kombu wraps the socket errors).
BROKER_DOWN = (BrokerUnreachable, ConnectionError, TimeoutError)

NOTHING_HIDDEN: frozenset[str] = frozenset()


def enqueue(
    operation: str, task_id: str, params: dict[str, Any], *, request_id: str | None = None
) -> None:
    """Send the job of an existing task to the workers (message id = task id), by name, so
    that launching needs no import of the Celery task modules."""
    current_app.send_task(
        f"operations.{operation}",
        kwargs={"task_id": task_id, "params": params, "request_id": request_id},
        task_id=task_id,
        queue=settings.CELERY_TASK_DEFAULT_QUEUE,
    )


def launch_task(
    operation: str,
    params: dict[str, Any] | None,
    *,
    launched_by: str,
    hidden: frozenset[str] = NOTHING_HIDDEN,
    request_id: str | None = None,
    idempotency_key: str | None = None,
    key_owner: int | None = None,
    send: bool = True,
    rerun_of: str | None = None,
) -> Launched:
    """Validate, create the task (``started``) and enqueue its job.

    With an ``idempotency_key`` (scoped to ``key_owner``), a repeat returns the
    first launch's task, and the key used for another launch is ``KeyReused``.
    ``send=False`` leaves the job to the caller (``run_operation`` runs it here).
    ``rerun_of`` names the finished run this one repeats (one the user may see, of the
    same operation).
    """
    registry.get_spec(operation)
    if operation in hidden:
        raise NotAllowed(f"{operation} handles personal data: launching it needs its reader role")
    if rerun_of is not None:
        original = selectors.get_task(str(rerun_of), hidden=hidden)
        if original is None:
            raise NoSuchTask(f"no task {rerun_of} to run again")
        if original.operation != operation:
            raise serializers.ValidationError(
                {"rerun_of": [f"task {rerun_of} is a run of {original.operation}, not {operation}"]}
            )
    claim = None
    if idempotency_key is not None:
        if key_owner is None:  # keys are scoped to a user: there is no anonymous scope
            raise ValueError("an idempotency_key needs its key_owner")
        claim = _claim_key(key_owner, idempotency_key)
        if claim.task_id is not None:
            earlier = selectors.get_task(str(claim.task_id), hidden=hidden)
            if earlier is not None:
                _same_launch(earlier, operation, params)
                return Launched(earlier, created=False)
    try:
        task_id = _create(
            operation,
            params,
            launched_by=launched_by,
            request_id=request_id,
            send=send,
            rerun_of=None if rerun_of is None else str(rerun_of),
        )
    except Exception:
        if claim is not None:
            IdempotencyKey.objects.filter(pk=claim.pk, task_id__isnull=True).delete()
        raise
    if claim is not None:
        IdempotencyKey.objects.filter(pk=claim.pk).update(task_id=task_id)
    task = selectors.get_task(task_id)
    if task is None:  # expired at once: only with a TTL of zero
        raise NoSuchTask(f"no task {task_id}")
    return Launched(task, created=True)


def launch(
    operation: str, params: dict[str, Any] | None, *, request_id: str | None, user_label: str
) -> str:
    """``launch_task`` for callers that only need the new task's id (beat, tests)."""
    return str(
        launch_task(operation, params, launched_by=user_label, request_id=request_id).task.task_id
    )


def cancel_task(task_id: str, *, by: str, hidden: frozenset[str] = NOTHING_HIDDEN) -> TaskStatus:
    """A queued run ends now, a running one at its next step; ``TaskAlreadyFinished`` (409)
    for one that is over, ``NoSuchTask`` for one the user cannot see."""
    task = selectors.get_task(task_id, hidden=hidden)
    if task is None:
        raise NoSuchTask(f"no task {task_id}")
    return runner.cancel(str(task.task_id), by=by)


def _create(
    operation: str,
    params: dict[str, Any] | None,
    *,
    launched_by: str,
    request_id: str | None,
    send: bool,
    rerun_of: str | None = None,
) -> str:
    clean = registry.validate_params(operation, params)
    handle = tracker.create_task(
        operation, request_id=request_id, params=clean, launched_by=launched_by, rerun_of=rerun_of
    )
    if not send:
        return handle.task_id

    def send_job() -> None:
        try:
            enqueue(operation, handle.task_id, clean, request_id=request_id)
        except Exception as exc:  # broker down: the task must not sit in "started" forever
            if isinstance(exc, BROKER_DOWN):  # expected in an outage: one line
                logger.warning(
                    "could not enqueue %s %s: the queue is unavailable (%s)",
                    operation,
                    handle.task_id,
                    exc.__class__.__name__,
                )
            else:
                logger.exception("could not enqueue %s %s", operation, handle.task_id)
            try:
                handle.fail(f"could not enqueue the job: {exc.__class__.__name__}")
            except tracker.TrackerError:
                pass
            raise QueueUnavailable("the job queue is unavailable; try again later") from exc

    if transaction.get_connection().in_atomic_block:
        # The worker must find the task: send only once the caller's transaction commits.
        transaction.on_commit(send_job, robust=True)
    else:
        send_job()
    return handle.task_id


def _claim_key(owner: int, key: str) -> IdempotencyKey:
    """The row for (owner, key); the first request to insert it is the one that launches."""
    try:
        with transaction.atomic():
            return IdempotencyKey.objects.create(user_id=owner, key=key)
    except IntegrityError:
        claim = IdempotencyKey.objects.get(user_id=owner, key=key)
        if claim.task_id is None:
            raise LaunchInProgress(
                "a launch with this Idempotency-Key is still in progress"
            ) from None
        return claim


def _same_launch(task: TaskStatus, operation: str, params: dict[str, Any] | None) -> None:
    """A key names one request: reusing it for another launch is the client's bug.

    Only the parameters the repeat names are compared: a default (yesterday's
    business date) may have moved on since the first request.
    """
    stored = task.params or {}
    given = registry.validate_params(operation, params) if task.operation == operation else {}
    if task.operation != operation or any(
        stored.get(name) != given.get(name) for name in (params or {})
    ):
        raise KeyReused("this Idempotency-Key was used for a different launch; use a new key")
