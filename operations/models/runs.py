"""The runs themselves: job leases, alert routes and deliveries, notify requests and
acknowledged failures."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models

from tasks.models import Operation


class JobRun(models.Model):
    """The lease of the worker running a task; how a dead worker is noticed.

    A running job renews ``lease_until`` from a heartbeat thread. When the
    worker process dies the lease runs out and ``reap_lost_jobs`` ends the task
    ``failed`` ("worker lost"); a redelivered message then finds the run over
    and does nothing. One row per task (unique) also keeps a duplicate
    delivery from running a task twice at once.
    """

    task_id = models.CharField(max_length=36, unique=True)
    operation = models.CharField(max_length=32)
    worker = models.CharField(max_length=200, blank=True, default="")
    attempts = models.IntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    lease_until = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["finished_at", "lease_until"], name="jobrun_open_lease")]

    def __str__(self) -> str:
        return f"{self.operation} {self.task_id} on {self.worker}"


def validate_email_list(value: str) -> None:
    bad = []
    for address in split_addresses(value):
        try:
            validate_email(address)
        except ValidationError:
            bad.append(address)
    if bad:
        raise ValidationError(f"not an email address: {', '.join(bad)}")


def split_addresses(value: str) -> list[str]:
    """Addresses separated by commas, semicolons, spaces or new lines."""
    return [
        part
        for part in value.replace(";", ",").replace("\n", ",").replace(" ", ",").split(",")
        if part.strip()
    ]


class AlertRoute(models.Model):
    """Who is told when a task of an operation (or of every operation) ends badly.

    Configuration, edited in the admin. Besides these rows, ``ALERT_EMAILS`` and
    ``ALERT_WEBHOOK_URL`` form a default route for every operation.
    """

    name = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text='What the route is for, e.g. "payroll team".',
    )
    operation = models.CharField(
        max_length=32,
        blank=True,
        default="",
        choices=Operation.choices,
        help_text="Blank: every operation.",
    )
    emails = models.TextField(
        blank=True,
        default="",
        validators=[validate_email_list],
        help_text="Addresses separated by commas or new lines; each gets its own message.",
    )
    webhook_url = models.URLField(
        max_length=500,
        blank=True,
        default="",
        help_text='A Slack or Microsoft Teams incoming webhook (a JSON POST with "text").',
    )
    on_failed = models.BooleanField(
        default=True,
        verbose_name="failed",
        help_text="Alert when a task ends failed (and when a scheduled run did not start).",
    )
    on_completed_with_errors = models.BooleanField(
        default=True,
        verbose_name="completed with errors",
        help_text="Alert when a task ends completed_with_errors.",
    )
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["operation", "name", "pk"]

    def __str__(self) -> str:
        return f"{self.name or 'route'} ({self.operation or 'all operations'})"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if not self.email_list() and not self.webhook_url:
            raise ValidationError("give at least one email address or a webhook URL")
        if not (self.on_failed or self.on_completed_with_errors):
            raise ValidationError("choose at least one status to alert on")

    def email_list(self) -> list[str]:
        return [address.strip() for address in split_addresses(self.emails)]


class AlertDelivery(models.Model):
    """One alert to one target (an address or a webhook) for one task and event.

    Claimed (inserted, ``sending``) before anything is sent, so a retry or a
    second run of the alert task skips it; marked ``sent``, ``failed`` (a
    transient failure: the alert task's next retry takes it again) or
    ``refused`` (the target said no for good) after.
    """

    class State(models.TextChoices):
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"
        REFUSED = "refused"

    task_id = models.CharField(max_length=36)
    operation = models.CharField(max_length=32)
    # "finished" (the task ended failed or completed_with_errors) or "not_started".
    event = models.CharField(max_length=16)
    # "email:<address>" or "webhook:<sha256 of the URL>": a URL's path is its secret.
    target = models.CharField(max_length=300)
    channel = models.CharField(max_length=16)
    destination = models.CharField(max_length=300, help_text="The address, or the webhook's host.")
    route = models.ForeignKey(
        AlertRoute,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
        related_name="+",
        help_text="Blank: the default route from the environment.",
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.SENDING)
    attempts = models.IntegerField(default=1)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["task_id", "event", "target"], name="alert_delivery_task_event_target"
            ),
        ]
        ordering = ["-created_at"]
        verbose_name_plural = "alert deliveries"

    def __str__(self) -> str:
        return f"{self.event} alert of {self.task_id} to {self.destination} ({self.state})"


class NotifyRequest(models.Model):
    """A user asked to be told by mail when a task ends ("notify me when it ends").

    Told once (``AlertDelivery`` event ``notify``), and only while the user may
    still see the task (``operations.notify``).
    """

    task_id = models.CharField(max_length=36)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task_id", "user"], name="notify_request_task_user"),
        ]
        indexes = [models.Index(fields=["task_id"], name="notify_request_task")]

    def __str__(self) -> str:
        return f"{self.user} on {self.task_id}"


class FailureAcknowledgement(models.Model):
    """Someone looked at a failed run: who, when, and a note (``operations.triage``).

    Kept beside the task, not in it: a finished task never changes.
    """

    task_id = models.CharField(max_length=36, unique=True)
    operation = models.CharField(max_length=32)
    by = models.CharField(max_length=150)
    note = models.TextField(blank=True, default="")
    at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.task_id} acknowledged by {self.by}"
