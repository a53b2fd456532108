"""The Celery tasks: one per available operation, plus purge, the reaper and the scheduler's
launcher. All are ``acks_late``: a message is acknowledged only after its job
ended, and a worker that died is answered by the job lease (operations.runner).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task, signals
from django.conf import settings

from tasks import metrics, tracker

from . import (
    alert_throttle,
    alert_transport,
    alerts,
    deferred,
    notify,
    retries,
    runner,
    running_long,
    services,
    watch,
    watchdog,
)
from .jobs import purge as purge_job

logger = logging.getLogger(__name__)

# The watchdog's thread (operations/watch.py) in every worker: missed scheduled runs
# are noticed where beat is not needed.
signals.worker_ready.connect(watch.start, weak=False)

JOB_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": False,
    "ignore_result": True,
    "max_retries": 0,
}
# The alert queue's tasks: their next tries are deferred (_retry_if_undelivered).
ALERT_OPTIONS: dict[str, Any] = {**JOB_OPTIONS, "max_retries": None}


def _run(
    task: Task, operation: str, task_id: str, params: dict[str, Any], request_id: str | None
) -> str:
    return runner.run_task(
        operation,
        task_id,
        params,
        request_id=request_id,
        worker=runner.worker_label(task.request.hostname),
        on_failed=retries.after_failure,
    )


@shared_task(name="operations.daily_sales", **JOB_OPTIONS)
def daily_sales(
    self: Task, task_id: str, params: dict[str, Any], request_id: str | None = None
) -> str:
    """Run daily_sales for an existing task (created by ``services.launch_task``)."""
    return _run(self, "daily_sales", task_id, params, request_id)


@shared_task(name="operations.invoice_sync", **JOB_OPTIONS)
def invoice_sync(
    self: Task, task_id: str, params: dict[str, Any], request_id: str | None = None
) -> str:
    """Run invoice_sync for an existing task (created by ``services.launch_task``)."""
    return _run(self, "invoice_sync", task_id, params, request_id)


@shared_task(name="operations.get_mpvs", **JOB_OPTIONS)
def get_mpvs(
    self: Task, task_id: str, params: dict[str, Any], request_id: str | None = None
) -> str:
    """Run get_mpvs for an existing task (created by ``services.launch_task``)."""
    return _run(self, "get_mpvs", task_id, params, request_id)


@shared_task(name="operations.transform_tips", **JOB_OPTIONS)
def transform_tips(
    self: Task, task_id: str, params: dict[str, Any], request_id: str | None = None
) -> str:
    """Run transform_tips for an existing task (created by ``services.launch_task``)."""
    return _run(self, "transform_tips", task_id, params, request_id)


@shared_task(name="operations.email_tips", **JOB_OPTIONS)
def email_tips(
    self: Task, task_id: str, params: dict[str, Any], request_id: str | None = None
) -> str:
    """Run email_tips for an existing task (created by ``services.launch_task``)."""
    return _run(self, "email_tips", task_id, params, request_id)


@shared_task(name="operations.update_food_handler_pdfs", **JOB_OPTIONS)
def update_food_handler_pdfs(
    self: Task, task_id: str, params: dict[str, Any], request_id: str | None = None
) -> str:
    """Run update_food_handler_pdfs for an existing task (created by ``services.launch_task``)."""
    return _run(self, "update_food_handler_pdfs", task_id, params, request_id)


@shared_task(name="operations.get_food_handler_links", **JOB_OPTIONS)
def get_food_handler_links(
    self: Task, task_id: str, params: dict[str, Any], request_id: str | None = None
) -> str:
    """Run get_food_handler_links for an existing task (created by ``services.launch_task``)."""
    return _run(self, "get_food_handler_links", task_id, params, request_id)


@shared_task(name="operations.purge", **JOB_OPTIONS)
def purge(self: Task) -> int:
    """Delete expired task statuses in batches; the count is logged and returned."""
    return purge_job.run()


@shared_task(name="operations.fail_stale_tasks", **JOB_OPTIONS)
def fail_stale_tasks(self: Task) -> int:
    """End ``failed`` every unfinished task whose reporter went silent (any reporter)."""
    failed = tracker.fail_stale_tasks()
    metrics.TASKS_STALE_FAILED.inc(failed)
    return failed


@shared_task(name="operations.reap_lost_jobs", **JOB_OPTIONS)
def reap_lost_jobs(self: Task) -> int:
    """End ``failed`` ("worker lost") every task whose worker stopped renewing its lease."""
    return runner.reap_lost_jobs()


@shared_task(name="operations.scheduled_launch", **JOB_OPTIONS)
def scheduled_launch(self: Task, operation: str) -> str | None:
    """What beat sends: a launch with default parameters, exactly like ``POST /task-status``."""
    try:
        return services.launch(
            operation, {}, request_id=f"beat-{self.request.id}", user_label="schedule"
        )
    except Exception:
        logger.exception("scheduled %s could not be launched", operation)
        return None


@shared_task(
    name="operations.send_alerts",
    **ALERT_OPTIONS,
)
def send_alerts(self: Task, task_id: str, event: str = "finished") -> int:
    """Tell the task's alert routes it ended failed or completed_with_errors (once each).

    Routed to ALERT_QUEUE. A target that failed transiently is tried again after
    ``alert_transport.retry_countdown`` (``operations.deferred``: no worker holds the
    message meanwhile), ALERT_MAX_RETRIES times; what went out is never sent again.
    """
    if event == alerts.FINISHED:
        # A run that failed for a passing reason and is retried is not a page at night:
        # the retry's own end is told. Too soon to know: asked again a little later.
        follows = retries.retry_follows(task_id)
        if follows:
            logger.info("task %s: failed, and a retry follows; its end will be told", task_id)
            return 0
        if follows is None:
            deferred.defer(
                self.name,
                delay=retries.RETRY_DECISION_SECONDS,
                queue=settings.ALERT_QUEUE,
                args=[task_id],
                kwargs={"event": event},
                retries=self.request.retries,
            )
            return 0
    outcome = alerts.send_alerts(task_id, event)
    return _retry_if_undelivered(self, outcome, task_id)


@shared_task(
    name="operations.send_alert_summary",
    **ALERT_OPTIONS,
)
def send_alert_summary(self: Task, reason: str, held: list[Any] | None = None) -> int:
    """At the end of a throttle window: one alert for the failures it held back.

    The first run takes what was held (``alert_throttle.take_held``, once); a retry
    carries it in its arguments.
    """
    if held is None:
        taken = alert_throttle.take_held(reason)
        if taken is None:
            return 0
        held = [taken.count, taken.latest_task_id, taken.since]
    count, task_id, since = held
    summary = alert_throttle.Held(count=int(count), latest_task_id=str(task_id), since=float(since))
    outcome = alerts.send_alerts(summary.latest_task_id, alerts.SUMMARY, held=summary)
    return _retry_if_undelivered(self, outcome, summary.latest_task_id, args=[reason, held])


@shared_task(
    name="operations.send_watchdog_alert",
    **ALERT_OPTIONS,
)
def send_watchdog_alert(
    self: Task, event: str, operation: str, when: float, task_id: str | None = None
) -> int:
    """What the watchdog found (a scheduled run late, a run running long), once per target."""
    if event == running_long.RUNNING_LONG and task_id:
        outcome = running_long.send_alert(task_id)
    else:
        outcome = watchdog.send_late_alert(operation, when)
    return _retry_if_undelivered(self, outcome, task_id or f"{operation} ({event})")


@shared_task(
    name="operations.send_notifications",
    **ALERT_OPTIONS,
)
def send_notifications(self: Task, task_id: str) -> int:
    """ "Notify me when it ends": one mail to each user who asked about this task."""
    return _retry_if_undelivered(self, notify.send_notifications(task_id), task_id)


def _retry_if_undelivered(
    task: Task, outcome: alerts.Outcome, task_id: str, args: list[Any] | None = None
) -> int:
    if outcome.retry_after is None:
        return outcome.sent
    if task.request.retries >= settings.ALERT_MAX_RETRIES:
        logger.error(
            "task %s: %d alert(s) still not delivered after %d retries; giving up",
            task_id,
            outcome.failed,
            task.request.retries,
        )
        return outcome.sent
    countdown = alert_transport.retry_countdown(task.request.retries, outcome.retry_after)
    logger.info("task %s: undelivered alert(s) tried again in %.0fs", task_id, countdown)
    # Deferred, not task.retry(countdown=...): no worker holds the message meanwhile.
    deferred.defer(
        task.name,
        delay=countdown,
        queue=settings.ALERT_QUEUE,
        args=list(args if args is not None else task.request.args or []),
        kwargs=dict(task.request.kwargs or {}),
        retries=task.request.retries + 1,
    )
    return outcome.sent


@shared_task(name="operations.alert_not_started", **JOB_OPTIONS)
def alert_not_started(self: Task) -> int:
    """Alert once for each scheduled run that no worker took within ALERT_NOT_STARTED_SECONDS.

    The beat runs this one itself (operations.beat.IN_BEAT_TASKS), so that it
    works when no worker does; a worker runs it only if a message is sent by hand.
    """
    return alerts.check_not_started()
