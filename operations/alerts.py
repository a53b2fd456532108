"""Failure alerts: when a task ends ``failed`` or ``completed_with_errors``, its people are told.

Trigger: ``tasks.tracker`` sends ``tasks.signals.task_finished`` after the
commit of the change that ended a task; ``on_task_finished`` (connected in
``OperationsConfig.ready``) only enqueues the Celery task
``operations.send_alerts`` on the alert queue (``ALERT_QUEUE``), so that no
alert waits behind a job. No network I/O happens in a job or a request, and a
receiver that fails is logged by the signal, never raised into the tracker.

Throttled: the same operation ending the same way with the same folded error
within ``ALERT_THROTTLE_SECONDS`` is alerted once, then summed up in one
``summary`` alert (``operations.alert_throttle``). Counted in
``tasksite_alerts_total{outcome}``: per target, ``sent``, ``failed`` (each
attempt that did not deliver) or ``suppressed`` (held back by the throttle).

Targets: every enabled ``AlertRoute`` of the task's operation or of all
operations that asks for its status, plus the default route of the environment
(``ALERT_EMAILS``, ``ALERT_WEBHOOK_URL``: every operation, both statuses). A
target named by two routes is sent to once.

Exactly once per task, event and target: an ``AlertDelivery`` row is claimed
(inserted, unique) before sending and marked after, so a retry or a second
delivery of the alert task sends nothing that went out. A transient failure
(``failed``) is taken again by the alert task's next retry; a target that
refused (``refused``) is not. A row left ``sending`` by a process killed
mid-send is not taken again: an alert is sent at most once. Each run tries
each target once; the alert task's Celery retry (with backoff, the worker free
in between) tries again.

Scheduled runs that did not start: ``check_not_started`` (run by the beat
itself, so it works when no worker does) alerts once for each task launched
by the schedule still ``started`` after ``ALERT_NOT_STARTED_SECONDS`` that no
worker took (no ``JobRun``). Routes that alert on ``failed`` receive it.

Personal data: the error text of an operation in ``PERSONAL_DATA_READER_ROLES``
can name employees, so its alerts never carry it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from tasks import metrics
from tasks.models import Operation, Status, TaskStatus

from . import alert_throttle
from .alert_transport import Refused, Transient, post_webhook
from .jobs.tip_emails import Mailer, MailServerUnavailable, Undeliverable, is_transient
from .models import AlertDelivery, AlertRoute, JobRun

logger = logging.getLogger(__name__)

FINISHED = "finished"
NOT_STARTED = "not_started"
SUMMARY = "summary"
ALERT_STATUSES = frozenset({Status.FAILED, Status.COMPLETED_WITH_ERRORS})
PERSONAL_DATA_NOTE = "details on the task page (personal data)"
MAX_ERROR_CHARS = 2000
State = AlertDelivery.State


# -- targets -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    channel: str  # "email" or "webhook"
    address: str
    route_id: int | None = None

    @property
    def key(self) -> str:
        if self.channel == "email":
            return f"email:{self.address.lower()}"
        return f"webhook:{hashlib.sha256(self.address.encode()).hexdigest()}"

    @property
    def label(self) -> str:
        """What logs and the admin show: the address, or only a webhook's host."""
        if self.channel == "email":
            return self.address
        parts = urlsplit(self.address)
        return f"{parts.scheme}://{parts.hostname or '?'}/…"


def targets(operation: str, kind: str) -> list[Target]:
    """Every target for ``kind`` (a final status, or NOT_STARTED) of ``operation``, once."""
    wanted = (
        Q(on_completed_with_errors=True)
        if kind == Status.COMPLETED_WITH_ERRORS
        else Q(on_failed=True)
    )
    found: dict[str, Target] = {}

    def add(channel: str, address: str, route_id: int | None) -> None:
        address = address.strip()
        if address:
            target = Target(channel, address, route_id)
            found.setdefault(target.key, target)

    routes = (
        AlertRoute.objects.filter(enabled=True)
        .filter(wanted)
        .filter(Q(operation="") | Q(operation=operation))
        .order_by("pk")
    )
    for route in routes:
        for address in route.email_list():
            add("email", address, route.pk)
        add("webhook", route.webhook_url, route.pk)
    for address in settings.ALERT_EMAILS:
        add("email", address, None)
    add("webhook", settings.ALERT_WEBHOOK_URL, None)
    return list(found.values())


# -- the trigger ---------------------------------------------------------------


def on_task_finished(sender: Any, task: TaskStatus, **kwargs: Any) -> None:
    """``task_finished`` receiver: enqueue ``operations.send_alerts`` when someone is to be told.

    Runs right after the tracker's commit, in the writer's thread: one quick read
    of the routes and one message to the broker, nothing else.
    """
    if task.status not in ALERT_STATUSES:
        return
    try:
        if not targets(task.operation, task.status):
            return
    except Exception:  # cannot tell: let the alert task look again
        logger.warning(
            "task %s: alert routes not readable; enqueuing anyway", task.task_id, exc_info=True
        )
    # By name: the Celery task module imports this one.
    current_app.send_task(
        "operations.send_alerts", args=[str(task.task_id)], queue=settings.ALERT_QUEUE
    )
    logger.info("task %s: %s alert enqueued", task.task_id, task.status)


# -- the message ---------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    subject: str
    headline: str
    details: list[tuple[str, str]]

    @property
    def text(self) -> str:
        """The plain-text email body."""
        lines = [self.headline, ""]
        lines += [f"{name}: {value}" for name, value in self.details]
        return "\n".join(lines) + "\n"

    @property
    def webhook_payload(self) -> dict[str, Any]:
        """Slack and Teams (legacy connectors) incoming webhooks both take ``{"text": ...}``.

        Paragraphs, not single new lines: Teams folds a lone new line into a space.
        """
        lines = [self.headline] + [f"{name}: {value}" for name, value in self.details]
        return {"text": "\n\n".join(lines)}


def duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def task_link(task_id: str) -> str:
    base = settings.PUBLIC_BASE_URL.rstrip("/")
    return f"{base}/tasks/{task_id}" if base else ""


def is_personal(operation: str) -> bool:
    return operation in settings.PERSONAL_DATA_READER_ROLES


def local_time(when: float) -> str:
    """A moment as staff read it: "2026-12-08 04:30" in TIME_ZONE."""
    zone = ZoneInfo(settings.TIME_ZONE)
    return datetime.fromtimestamp(when, zone).strftime("%Y-%m-%d %H:%M")


def compose(
    task: TaskStatus,
    event: str,
    *,
    now: float | None = None,
    held: alert_throttle.Held | None = None,
) -> Alert:
    """Operation, status, task id and link, launched by, duration, errors; never personal data."""
    operation = task.operation
    label = Operation(operation).label if operation in Operation.values else operation
    task_id = str(task.task_id)
    if event == SUMMARY and held is not None:
        word = "failed" if task.status == Status.FAILED else "completed with errors"
        times = "once more" if held.count == 1 else f"{held.count} more times"
        subject = f"[tasks] {operation} {word} {times}"
        headline = (
            f"{label} ({operation}) {word} {times} since {local_time(held.since)} "
            f"with the same error; those alerts were held back "
            f"(one per {duration(settings.ALERT_THROTTLE_SECONDS)})."
        )
        status, timing = task.status, ("Held back", str(held.count))
    elif event == NOT_STARTED:
        waited = (time.time() if now is None else now) - task.created_at
        bound = duration(settings.ALERT_NOT_STARTED_SECONDS)
        subject = f"[tasks] {operation}: scheduled run not started"
        headline = f"No worker took the scheduled run of {operation} within {bound}."
        status, timing = ("started (no worker took it)", ("Waiting for", duration(waited)))
    else:
        word = "failed" if task.status == Status.FAILED else "completed with errors"
        subject = f"[tasks] {operation} {word}"
        headline = f"{label} ({operation}) {word}."
        status, timing = task.status, ("Duration", duration(task.updated_at - task.created_at))
    details = [("Operation", f"{label} ({operation})"), ("Status", status), ("Task", task_id)]
    link = task_link(task_id)
    if link:
        details.append(("Link", link))
    details += [
        ("Launched by", task.launched_by or "unknown"),
        timing,
        ("Errors", str(task.error_count)),
    ]
    if event != NOT_STARTED and task.error:
        if is_personal(operation):
            details.append(("Error", PERSONAL_DATA_NOTE))
        else:
            error = " ".join(task.error.split())
            if len(error) > MAX_ERROR_CHARS:
                error = error[:MAX_ERROR_CHARS] + "…"
            details.append(("Error", error))
    return Alert(subject, headline, details)


class _Mail:
    """The project's mailer (tip statements: paced, retried with backoff), opened on first use."""

    def __init__(self) -> None:
        self.mailer: Any = None

    def send(self, address: str, alert: Alert) -> None:
        if self.mailer is None:
            self.mailer = Mailer()
        message = EmailMessage(
            alert.subject, alert.text, from_email=settings.ALERT_FROM_EMAIL, to=[address]
        )
        try:
            self.mailer.send(message)
        except MailServerUnavailable as exc:
            raise Transient(f"mail server unavailable ({exc})") from None
        except Undeliverable as exc:
            cause = exc.__cause__
            if cause is not None and is_transient(cause):
                raise Transient(str(exc)) from None
            raise Refused(str(exc)) from None
        except OSError as exc:
            raise Transient(f"not delivered ({exc.__class__.__name__})") from None

    def close(self) -> None:
        if self.mailer is not None:
            self.mailer.close()


# -- exactly once --------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """What an alert is about: a task, or (watchdog) a key of its own in the task's place."""

    task_id: str
    operation: str


def claim(
    task: Subject, event: str, target: Target, existing: dict[str, str]
) -> AlertDelivery | None:
    """Take the delivery of ``target``: a new row, or one that failed before; else None."""
    key, task_id = target.key, str(task.task_id)
    state = existing.get(key)
    if state is None:
        try:
            with transaction.atomic():
                return AlertDelivery.objects.create(
                    task_id=task_id,
                    operation=task.operation,
                    event=event,
                    target=key,
                    channel=target.channel,
                    destination=target.label[:300],
                    route_id=target.route_id,
                    state=State.SENDING,
                    attempts=1,
                )
        except IntegrityError:  # another run inserted it meanwhile
            pass
    elif state != State.FAILED:
        return None
    rows = AlertDelivery.objects.filter(
        task_id=task_id, event=event, target=key, state=State.FAILED
    )
    if rows.update(state=State.SENDING, attempts=F("attempts") + 1, updated_at=timezone.now()):
        return AlertDelivery.objects.get(task_id=task_id, event=event, target=key)
    return None


def _record(delivery: AlertDelivery, state: str, error: str = "") -> None:
    now = timezone.now()
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        state=state,
        last_error=error[:1000],
        updated_at=now,
        sent_at=now if state == State.SENT else None,
    )


@dataclass
class Outcome:
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    refused: int = 0
    suppressed: int = 0
    # Set when a delivery failed transiently: retry no sooner than this (seconds).
    retry_after: float | None = None
    targets: list[str] = field(default_factory=list)


def send_alerts(
    task_id: str, event: str = FINISHED, *, held: alert_throttle.Held | None = None
) -> Outcome:
    """Send the alerts of one task once per target; what failed transiently is retryable.

    ``SUMMARY`` (with ``held``): what the throttle held back, told on the latest such task.
    """
    outcome = Outcome()
    try:
        task = TaskStatus.objects.get(pk=task_id)
    except (TaskStatus.DoesNotExist, ValueError, TypeError, ValidationError):
        logger.warning("task %s: no such task (purged?); no alert", task_id)
        return outcome
    if event in (FINISHED, SUMMARY):
        if task.status not in ALERT_STATUSES:
            return outcome
        kind = task.status
    else:
        kind = NOT_STARTED
    if event == FINISHED and _held_back(task, outcome):
        return outcome
    subject = Subject(str(task.task_id), task.operation)
    return deliver(subject, event, kind, compose(task, event, held=held), outcome)


def deliver(
    subject: Subject,
    event: str,
    kind: str,
    alert: Alert,
    outcome: Outcome | None = None,
    *,
    to: list[Target] | None = None,
) -> Outcome:
    """``alert`` to every target of ``kind`` for ``subject``'s operation (or ``to``), once each."""
    outcome = outcome or Outcome()
    existing = dict(
        AlertDelivery.objects.filter(task_id=subject.task_id, event=event).values_list(
            "target", "state"
        )
    )
    mail = _Mail()
    try:
        for target in targets(subject.operation, kind) if to is None else to:
            delivery = claim(subject, event, target, existing)
            if delivery is None:
                outcome.skipped += 1
                continue
            outcome.targets.append(target.label)
            _deliver(subject, event, target, delivery, alert, mail, outcome)
    finally:
        mail.close()
    return outcome


def _held_back(task: TaskStatus, outcome: Outcome) -> bool:
    """Whether the throttle holds this task's alerts back; a summary is then scheduled."""
    decision = alert_throttle.check(
        str(task.task_id), task.operation, task.status, task.error, task.updated_at
    )
    if not decision.held:
        return False
    outcome.suppressed = len(targets(task.operation, task.status))
    if decision.new:
        metrics.ALERTS.labels("suppressed").inc(outcome.suppressed)
    logger.info(
        "task %s: %s alert held back (same operation and error alerted within %s)",
        task.task_id,
        task.status,
        duration(settings.ALERT_THROTTLE_SECONDS),
    )
    if decision.summary_in is not None:
        current_app.send_task(
            "operations.send_alert_summary",
            args=[decision.reason],
            countdown=decision.summary_in,
            queue=settings.ALERT_QUEUE,
        )
    return True


def _deliver(
    task: Subject,
    event: str,
    target: Target,
    delivery: AlertDelivery,
    alert: Alert,
    mail: _Mail,
    outcome: Outcome,
) -> None:
    try:
        if target.channel == "email":
            mail.send(target.address, alert)
        else:
            post_webhook(target.address, alert.webhook_payload, target.label)
    except Refused as exc:
        outcome.refused += 1
        metrics.ALERTS.labels("failed").inc()
        _record(delivery, State.REFUSED, str(exc))
        logger.error("task %s: %s alert to %s refused: %s", task.task_id, event, target.label, exc)
    except Transient as exc:
        outcome.failed += 1
        metrics.ALERTS.labels("failed").inc()
        outcome.retry_after = max(outcome.retry_after or 0.0, exc.retry_after)
        _record(delivery, State.FAILED, str(exc))
        logger.warning(
            "task %s: %s alert to %s not delivered: %s", task.task_id, event, target.label, exc
        )
    except Exception as exc:  # a bug must not leave the row "sending" for ever
        outcome.failed += 1
        metrics.ALERTS.labels("failed").inc()
        outcome.retry_after = max(outcome.retry_after or 0.0, 0.0)
        _record(delivery, State.FAILED, exc.__class__.__name__)
        logger.exception("task %s: %s alert to %s failed", task.task_id, event, target.label)
    else:
        outcome.sent += 1
        metrics.ALERTS.labels("sent").inc()
        _record(delivery, State.SENT)
        logger.info("task %s: %s alert sent to %s", task.task_id, event, target.label)


# -- scheduled runs that did not start -------------------------------------------


def not_started_tasks(*, now: float | None = None) -> list[str]:
    """Scheduled tasks still ``started`` after ALERT_NOT_STARTED_SECONDS that no worker took."""
    now = time.time() if now is None else now
    cutoff = now - settings.ALERT_NOT_STARTED_SECONDS
    # The stale check fails an unfinished task within its bound: older ones need no look
    # (and the window keeps this on the created_at index).
    oldest = (
        cutoff
        - max([settings.TASK_STALE_SECONDS, *settings.TASK_STALE_SECONDS_BY_OPERATION.values()])
        - 3600
    )
    candidates = [
        str(task_id)
        for task_id in TaskStatus.objects.filter(
            created_at__gt=oldest,
            created_at__lt=cutoff,
            launched_by="schedule",
            status=Status.STARTED,
            expires_at__gt=now,
        ).values_list("task_id", flat=True)
    ]
    if not candidates:
        return []
    taken = set(JobRun.objects.filter(task_id__in=candidates).values_list("task_id", flat=True))
    # Done with: every target answered (sent or refused); a failed one is tried again.
    settled = set(
        AlertDelivery.objects.filter(task_id__in=candidates, event=NOT_STARTED).values_list(
            "task_id", flat=True
        )
    ) - set(
        AlertDelivery.objects.filter(
            task_id__in=candidates, event=NOT_STARTED, state=State.FAILED
        ).values_list("task_id", flat=True)
    )
    return [task_id for task_id in candidates if task_id not in taken | settled]


def check_not_started(*, now: float | None = None) -> int:
    """Alert once for each scheduled run no worker took in time; returns alerts sent."""
    sent = 0
    for task_id in not_started_tasks(now=now):
        outcome = send_alerts(task_id, NOT_STARTED)
        if outcome.targets:
            logger.warning(
                "task %s: no worker took this scheduled run within %s; alerted %s",
                task_id,
                duration(settings.ALERT_NOT_STARTED_SECONDS),
                ", ".join(outcome.targets),
            )
        sent += outcome.sent
    return sent
