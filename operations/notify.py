"""Tell the launcher: "notify me when it ends", by mail to the user who asked.

A user asks on a task's page (or with ``"notify": true`` in ``POST
/task-status``); ``NotifyRequest`` records it. When the task ends (any final
status: the tracker's ``task_finished`` signal), ``on_task_finished`` enqueues
``operations.send_notifications`` on the alert queue, which mails each user who
asked, once (``AlertDelivery``, event ``notify``), and only while that user may
still see the task (personal data: the reader role is checked again when
sending, from the user's groups; without it, nothing is sent).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from tasks import selectors
from tasks.auth.permissions import hidden_operations
from tasks.models import TERMINAL_STATUSES, Operation, Status, TaskStatus

from . import alerts
from .models import NotifyRequest

logger = logging.getLogger(__name__)

NOTIFY = "notify"


def request(task_id: str, user: Any, *, hidden: frozenset[str]) -> bool:
    """Record that ``user`` wants a mail when the task ends; False if it cannot be done
    (no such task for this user, already over, or no address)."""
    task = selectors.get_task(task_id, hidden=hidden)
    if task is None or task.status in TERMINAL_STATUSES or not getattr(user, "email", ""):
        return False
    try:
        with transaction.atomic():
            NotifyRequest.objects.create(task_id=str(task.task_id), user=user)
    except IntegrityError:
        pass  # asked before: once is enough
    return True


def wanted(task_id: str, user: Any) -> bool:
    return NotifyRequest.objects.filter(task_id=task_id, user_id=user.pk).exists()


def on_task_finished(sender: Any, task: TaskStatus, **kwargs: Any) -> None:
    """``task_finished`` receiver: enqueue the notifications when someone asked for one."""
    if task.status not in TERMINAL_STATUSES:
        return
    if not NotifyRequest.objects.filter(task_id=str(task.task_id)).exists():
        return
    current_app.send_task(
        "operations.send_notifications", args=[str(task.task_id)], queue=settings.ALERT_QUEUE
    )


def compose(task: TaskStatus) -> alerts.Alert:
    label = (
        Operation(task.operation).label if task.operation in Operation.values else task.operation
    )
    word = task.status.replace("_", " ")
    details = [("Operation", f"{label} ({task.operation})"), ("Status", word)]
    details.append(("Task", str(task.task_id)))
    link = alerts.task_link(str(task.task_id))
    if link:
        details.append(("Link", link))
    details += [
        ("Duration", alerts.duration(task.updated_at - task.created_at)),
        ("Errors", str(task.error_count)),
    ]
    if task.error and task.status != Status.COMPLETED and not alerts.is_personal(task.operation):
        details.append(("Error", " ".join(task.error.split())[: alerts.MAX_ERROR_CHARS]))
    return alerts.Alert(
        subject=f"[tasks] your {task.operation} run ended: {word}",
        headline=f"{label} ({task.operation}), which you asked to hear about, ended {word}.",
        details=details,
    )


def send_notifications(task_id: str) -> alerts.Outcome:
    """Mail each user who asked about this task, once, if they may still see it."""
    task = selectors.get_task(task_id)
    if task is None or task.status not in TERMINAL_STATUSES:
        return alerts.Outcome()
    users = get_user_model().objects.filter(
        pk__in=NotifyRequest.objects.filter(task_id=task_id).values("user_id"), is_active=True
    )
    to = [
        alerts.Target("email", user.email)
        for user in users
        if user.email and task.operation not in hidden_operations(user)
    ]
    subject = alerts.Subject(str(task.task_id), task.operation)
    return alerts.deliver(subject, NOTIFY, task.status, compose(task), to=to)
