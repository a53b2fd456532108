"""The Celery tasks: one per available operation, plus purge, the reaper and the scheduler's
launcher. All are ``acks_late``: a message is acknowledged only after its job
ended, and a worker that died is answered by the job lease (operations.runner).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from django.conf import settings

from tasks import metrics, tracker
from tasksite.celery import app

from . import alerts, runner, services
from .jobs import purge as purge_job

logger = logging.getLogger(__name__)

JOB_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": False,
    "ignore_result": True,
    "max_retries": 0,
}


def _run(
    task: Task, operation: str, task_id: str, params: dict[str, Any], request_id: str | None
) -> str:
    return runner.run_task(
        operation,
        task_id,
        params,
        request_id=request_id,
        worker=runner.worker_label(task.request.hostname),
    )


@app.task(name="operations.daily_sales", **JOB_OPTIONS)
def daily_sales(
    self: Task, task_id: str, params: dict[str, Any], request_id: str | None = None
) -> str:
    """Run daily_sales for an existing task (created by ``services.launch_task``)."""
    return _run(self, "daily_sales", task_id, params, request_id)


@app.task(name="operations.invoice_sync", **JOB_OPTIONS)
def invoice_sync(
    self: Task, task_id: str, params: dict[str, Any], request_id: str | None = None
) -> str:
    """Run invoice_sync for an existing task (created by ``services.launch_task``)."""
    return _run(self, "invoice_sync", task_id, params, request_id)


@app.task(name="operations.get_mpvs", **JOB_OPTIONS)
def get_mpvs(
    self: Task, task_id: str, params: dict[str, Any], request_id: str | None = None
) -> str:
    """Run get_mpvs for an existing task (created by ``services.launch_task``)."""
    return _run(self, "get_mpvs", task_id, params, request_id)


@app.task(name="operations.transform_tips", **JOB_OPTIONS)
def transform_tips(
    self: Task, task_id: str, params: dict[str, Any], request_id: str | None = None
) -> str:
    """Run transform_tips for an existing task (created by ``services.launch_task``)."""
    return _run(self, "transform_tips", task_id, params, request_id)


@app.task(name="operations.email_tips", **JOB_OPTIONS)
def email_tips(
    self: Task, task_id: str, params: dict[str, Any], request_id: str | None = None
) -> str:
    """Run email_tips for an existing task (created by ``services.launch_task``)."""
    return _run(self, "email_tips", task_id, params, request_id)


@app.task(name="operations.update_food_handler_pdfs", **JOB_OPTIONS)
def update_food_handler_pdfs(
    self: Task, task_id: str, params: dict[str, Any], request_id: str | None = None
) -> str:
    """Run update_food_handler_pdfs for an existing task (created by ``services.launch_task``)."""
    return _run(self, "update_food_handler_pdfs", task_id, params, request_id)


@app.task(name="operations.get_food_handler_links", **JOB_OPTIONS)
def get_food_handler_links(
    self: Task, task_id: str, params: dict[str, Any], request_id: str | None = None
) -> str:
    """Run get_food_handler_links for an existing task (created by ``services.launch_task``)."""
    return _run(self, "get_food_handler_links", task_id, params, request_id)


@app.task(name="operations.purge", **JOB_OPTIONS)
def purge(self: Task) -> int:
    """Delete expired task statuses in batches; the count is logged and returned."""
    return purge_job.run()


@app.task(name="operations.fail_stale_tasks", **JOB_OPTIONS)
def fail_stale_tasks(self: Task) -> int:
    """End ``failed`` every unfinished task whose reporter went silent (any reporter)."""
    failed = tracker.fail_stale_tasks()
    metrics.TASKS_STALE_FAILED.inc(failed)
    return failed


@app.task(name="operations.reap_lost_jobs", **JOB_OPTIONS)
def reap_lost_jobs(self: Task) -> int:
    """End ``failed`` ("worker lost") every task whose worker stopped renewing its lease."""
    return runner.reap_lost_jobs()


@app.task(name="operations.scheduled_launch", **JOB_OPTIONS)
def scheduled_launch(self: Task, operation: str) -> str | None:
    """What beat sends: a launch with default parameters, exactly like ``POST /task-status``."""
    try:
        return services.launch(
            operation, {}, request_id=f"beat-{self.request.id}", user_label="schedule"
        )
    except Exception:
        logger.exception("scheduled %s could not be launched", operation)
        return None


# Retries of an alert whose target failed transiently: 1, 2, 4, 8, 16 and 32 minutes
# (or the receiver's Retry-After, when longer). What went out is never sent again.
ALERT_RETRY_SECONDS = 60
ALERT_TASK_RETRIES = 6


@app.task(
    name="operations.send_alerts",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=False,
    ignore_result=True,
    max_retries=ALERT_TASK_RETRIES,
)
def send_alerts(self: Task, task_id: str, event: str = "finished") -> int:
    """Tell the task's alert routes it ended failed or completed_with_errors (once each)."""
    outcome = alerts.send_alerts(task_id, event)
    if outcome.retry_after is None:
        return outcome.sent
    if self.request.retries >= ALERT_TASK_RETRIES:
        logger.error(
            "task %s: %d alert(s) still not delivered after %d retries; giving up",
            task_id,
            outcome.failed,
            self.request.retries,
        )
        return outcome.sent
    countdown = max(outcome.retry_after, ALERT_RETRY_SECONDS * 2**self.request.retries)
    raise self.retry(countdown=countdown, queue=settings.CELERY_TASK_DEFAULT_QUEUE)


@app.task(name="operations.alert_not_started", **JOB_OPTIONS)
def alert_not_started(self: Task) -> int:
    """Alert once for each scheduled run that no worker took within ALERT_NOT_STARTED_SECONDS.

    The beat runs this one itself (operations.beat.IN_BEAT_TASKS), so that it
    works when no worker does; a worker runs it only if a message is sent by hand.
    """
    return alerts.check_not_started()
