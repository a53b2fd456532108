"""The stored task status: one row per task, written only by ``tasks.tracker``."""

from __future__ import annotations

import reprlib
import uuid

from django.conf import settings
from django.db import models


class Operation(models.TextChoices):
    DAILY_SALES = "daily_sales", "Daily sales processing"
    INVOICE_SYNC = "invoice_sync", "Invoice synchronization"
    UPDATE_FOOD_HANDLER_PDFS = "update_food_handler_pdfs", "Food handler PDF updates"
    TRANSFORM_TIPS = "transform_tips", "Tips transformation"
    GET_MPVS = "get_mpvs", "Meal period violations"
    GET_FOOD_HANDLER_LINKS = "get_food_handler_links", "Food handler PDF links"
    EMAIL_TIPS = "email_tips", "Tips email generation"


class Status(models.TextChoices):
    STARTED = "started", "Started"
    PROCESSING = "processing", "Processing"
    ERROR = "error", "Error"
    COMPLETED = "completed", "Completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors", "Completed with errors"
    FAILED = "failed", "Failed"


# A value a client sent, quoted in an error: bounded in length and depth, so that
# a deeply nested JSON value can never blow the stack while it is described.
_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxstring, _QUOTE.maxother = 2, 80, 80


def quoted(value: object) -> str:
    return _QUOTE.repr(value)


# The one wording of an unknown operation, wherever one is refused ({input}: what was sent).
UNKNOWN_OPERATION = "unknown operation {input}; valid: " + ", ".join(Operation.values)


def unknown_operation(value: object) -> str:
    return UNKNOWN_OPERATION.format(input=quoted(value))


TERMINAL_STATUSES = frozenset({Status.COMPLETED, Status.COMPLETED_WITH_ERRORS, Status.FAILED})


class TaskStatus(models.Model):
    task_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operation = models.CharField(max_length=32, choices=Operation.choices)
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.STARTED)
    progress_current = models.IntegerField(null=True, blank=True)
    progress_total = models.IntegerField(null=True, blank=True)
    progress_message = models.TextField(blank=True, default="")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)  # noqa: DJ001 (null is the wire's "no error")
    # Unix seconds with sub-second precision: the wire shows whole seconds, but
    # catch-up and ordering need the finer value.
    created_at = models.FloatField()
    updated_at = models.FloatField()
    expires_at = models.FloatField()
    version = models.PositiveIntegerField(default=1)
    error_count = models.PositiveIntegerField(default=0)
    request_id = models.CharField(max_length=128, blank=True, default="")
    launched_by = models.CharField(max_length=150, blank=True, default="")
    params = models.JSONField(null=True, blank=True)
    cancel_requested_by = models.CharField(max_length=150, blank=True, default="")
    # The reporter's last sign of life besides a write: an open handle beats while its
    # job works on a long step (tracker.TaskHandle), so the liveness bound spares it.
    heartbeat_at = models.FloatField(null=True, blank=True)
    # The finished run this one repeats ("Run again"), shown on its page.
    rerun_of = models.UUIDField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-task_id"]
        indexes = [
            models.Index(fields=["operation", "-created_at", "-task_id"], name="task_op_created"),
            models.Index(fields=["-created_at", "-task_id"], name="task_created"),
            models.Index(fields=["updated_at"], name="task_updated"),
            models.Index(fields=["expires_at"], name="task_expires"),
        ]
        verbose_name = "task status"
        verbose_name_plural = "task statuses"

    def __str__(self) -> str:
        return f"{self.operation} {self.task_id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def progress(self) -> dict | None:
        if self.progress_current is None:
            return None
        return {
            "current": self.progress_current,
            "total": self.progress_total if self.progress_total is not None else 0,
            "message": self.progress_message,
        }


class ApiToken(models.Model):
    """A local-mode bearer token; only its SHA-256 is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100, blank=True, default="")
    key_hash = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"API token {self.name or self.pk} of {self.user}"


class IdempotencyKey(models.Model):
    """Makes a repeated launch with the same ``Idempotency-Key`` return the same task."""

    user_id = models.BigIntegerField()
    key = models.CharField(max_length=200)
    task_id = models.UUIDField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user_id", "key"], name="idempotency_user_key")
        ]

    def __str__(self) -> str:
        return f"{self.key} -> {self.task_id}"


class TaskEvent(models.Model):
    """One status change of a task (not a progress step), or a cancel request: its timeline.

    Written by the tracker in the same transaction as the change, so the
    timeline and the document never disagree; deleted with the task by the
    purge (no database foreign key: the purge deletes both in one statement).
    """

    class Kind(models.TextChoices):
        STATUS = "status"
        CANCEL_REQUESTED = "cancel_requested"

    task = models.ForeignKey(
        TaskStatus, on_delete=models.DO_NOTHING, db_constraint=False, related_name="events"
    )
    version = models.PositiveIntegerField()
    at = models.FloatField()
    kind = models.CharField(max_length=24, choices=Kind.choices, default=Kind.STATUS)
    status = models.CharField(max_length=32, choices=Status.choices)
    progress_current = models.IntegerField(null=True, blank=True)
    progress_total = models.IntegerField(null=True, blank=True)
    progress_message = models.TextField(blank=True, default="")
    error = models.TextField(null=True, blank=True)  # noqa: DJ001 (null: no error, as on the wire)
    by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["task", "version"], name="task_event_task_version")]
        ordering = ["task", "version", "id"]

    def __str__(self) -> str:
        return f"{self.task_id} v{self.version} {self.kind} {self.status}"
