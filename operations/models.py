"""What the jobs store: sales summaries, meal period violations, invoices, the sync
watermark, AP batches, job leases, tip shares and statements, food handler
certificates and packets (current, archived, and who left when).

Every table is keyed so that a re-run or a second run at the same time
replaces or skips, never duplicates: summaries on (business_date, location),
meal period violations on (business_date, location, employee, shift),
invoices on (vendor, invoice number), export lines on (invoice, content hash),
tip shares on (business_date, location, employee), certificates on the employee,
packets on the location. Tip statements sent are a history, one row per send:
``email_tips`` compares with the latest under a per-statement lock.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

from tasks.models import Operation


class DailySalesSummary(models.Model):
    """One location's sales for one business date, as computed by ``daily_sales``."""

    business_date = models.DateField()
    location_id = models.CharField(max_length=32)
    location_name = models.CharField(max_length=200, blank=True, default="")
    gross_sales = models.DecimalField(max_digits=14, decimal_places=2)
    net_sales = models.DecimalField(max_digits=14, decimal_places=2)
    discounts = models.DecimalField(max_digits=14, decimal_places=2)
    voids = models.DecimalField(max_digits=14, decimal_places=2)
    refunds = models.DecimalField(max_digits=14, decimal_places=2)
    tax = models.DecimalField(max_digits=14, decimal_places=2)
    tips = models.DecimalField(max_digits=14, decimal_places=2)
    service_charges = models.DecimalField(max_digits=14, decimal_places=2)
    guest_count = models.IntegerField()
    check_count = models.IntegerField()
    voided_check_count = models.IntegerField(default=0)
    average_check = models.DecimalField(max_digits=14, decimal_places=2)
    # {"11": "1234.50", ...} local hour of the check's opening -> net sales (string decimals)
    net_sales_by_hour = models.JSONField(default=dict)
    net_sales_by_revenue_center = models.JSONField(default=dict)
    task_id = models.CharField(max_length=36, blank=True, default="")
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["business_date", "location_id"], name="sales_summary_date_location"
            ),
        ]
        ordering = ["-business_date", "location_id"]
        verbose_name_plural = "daily sales summaries"

    def __str__(self) -> str:
        return f"{self.location_id} {self.business_date}"


class MealPeriodViolation(models.Model):
    """One shift that owes meal period premium pay, as found by ``get_mpvs``.

    Only shifts with a violation are stored; a re-run of a location-day replaces all of
    that location-day's rows (the shifts checked are counted in the task's result).
    """

    class Kind(models.TextChoices):
        LATE_FIRST = "late_first_meal"
        SHORT_FIRST = "short_first_meal"
        MISSING_FIRST = "missing_first_meal"
        LATE_SECOND = "late_second_meal"
        SHORT_SECOND = "short_second_meal"
        MISSING_SECOND = "missing_second_meal"

    business_date = models.DateField()
    location_id = models.CharField(max_length=32)
    location_name = models.CharField(max_length=200, blank=True, default="")
    employee_id = models.CharField(max_length=64)
    employee_name = models.CharField(max_length=200, blank=True, default="")
    shift_id = models.CharField(max_length=64)
    clock_in = models.DateTimeField()
    clock_out = models.DateTimeField()
    hours_worked = models.DecimalField(max_digits=6, decimal_places=2)
    # At most one violation per meal period; blank when that meal period was compliant.
    first_meal = models.CharField(max_length=24, choices=Kind.choices, blank=True, default="")
    second_meal = models.CharField(max_length=24, choices=Kind.choices, blank=True, default="")
    hourly_rate = models.DecimalField(max_digits=8, decimal_places=2)
    premium_hours = models.IntegerField()
    premium_pay = models.DecimalField(max_digits=10, decimal_places=2)
    task_id = models.CharField(max_length=36, blank=True, default="")
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["business_date", "location_id", "employee_id", "shift_id"],
                name="mpv_date_location_employee_shift",
            ),
        ]
        ordering = ["-business_date", "location_id", "employee_id", "shift_id"]

    def __str__(self) -> str:
        return f"{self.location_id} {self.business_date} {self.employee_id} {self.shift_id}"


class Invoice(models.Model):
    """A vendor invoice as last received; ``content_hash`` detects a real change."""

    vendor_id = models.CharField(max_length=32)
    invoice_number = models.CharField(max_length=64)
    document_type = models.CharField(max_length=16, default="invoice")
    invoice_date = models.DateField()
    due_date = models.DateField(null=True, blank=True)
    location_id = models.CharField(max_length=32, blank=True, default="")
    currency = models.CharField(max_length=3, default="USD")
    subtotal = models.DecimalField(max_digits=14, decimal_places=2)
    tax = models.DecimalField(max_digits=14, decimal_places=2)
    total = models.DecimalField(max_digits=14, decimal_places=2)
    lines = models.JSONField(default=list)
    source_updated_at = models.DateTimeField(null=True, blank=True)
    content_hash = models.CharField(max_length=64)
    # Hash of the version last delivered to accounting; differs from
    # content_hash while a new or changed invoice waits for export.
    exported_hash = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["vendor_id", "invoice_number"], name="invoice_vendor_number"
            ),
        ]
        ordering = ["vendor_id", "invoice_number"]

    def __str__(self) -> str:
        return f"{self.vendor_id}/{self.invoice_number}"


class SyncWatermark(models.Model):
    """Where the last successful sync of a source got to (its newest ``updated_at``)."""

    name = models.CharField(max_length=64, unique=True)
    value = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} @ {self.value}"


class AccountingExport(models.Model):
    """One AP import batch sent (or being sent) to the accounting target."""

    class State(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    batch_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    task_id = models.CharField(max_length=36, blank=True, default="")
    invoice_count = models.IntegerField(default=0)
    reference = models.CharField(max_length=200, blank=True, default="")
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"AP batch {self.batch_id} ({self.state})"


class AccountingExportLine(models.Model):
    """Claims one version of one invoice for one batch.

    The unique constraint is what stops two concurrent syncs from exporting
    the same invoice version twice: the second insert fails, whatever the
    isolation level. A failed batch deletes its lines to release the claims.
    """

    batch = models.ForeignKey(AccountingExport, on_delete=models.CASCADE, related_name="lines")
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="exports")
    content_hash = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["invoice", "content_hash"], name="export_line_invoice_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.invoice_id}@{self.content_hash[:8]} in batch {self.batch_id}"


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


class TipShare(models.Model):
    """One employee's share of one location-day's tip pools, as computed by ``transform_tips``.

    A re-run of a range replaces the range's rows (keyed on date, location, employee).
    """

    business_date = models.DateField()
    location_id = models.CharField(max_length=32)
    location_name = models.CharField(max_length=200, blank=True, default="")
    employee_id = models.CharField(max_length=64)
    employee_name = models.CharField(max_length=200, blank=True, default="")
    job = models.CharField(max_length=64, blank=True, default="")
    hours = models.DecimalField(max_digits=7, decimal_places=2)
    points = models.DecimalField(max_digits=7, decimal_places=2)
    card_tips = models.DecimalField(max_digits=10, decimal_places=2)
    cash_tips = models.DecimalField(max_digits=10, decimal_places=2)
    task_id = models.CharField(max_length=36, blank=True, default="")
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["business_date", "location_id", "employee_id"],
                name="tip_share_date_location_employee",
            ),
        ]
        indexes = [
            models.Index(fields=["employee_id", "business_date"], name="tip_share_employee_date")
        ]
        ordering = ["-business_date", "location_id", "employee_id"]

    def __str__(self) -> str:
        return f"{self.location_id} {self.business_date} {self.employee_id}"

    @property
    def total(self) -> Decimal:
        return self.card_tips + self.cash_tips


class TipPool(models.Model):
    """One location-day's pools as distributed: what the shares of that day add up to."""

    business_date = models.DateField()
    location_id = models.CharField(max_length=32)
    card_tips = models.DecimalField(max_digits=12, decimal_places=2)
    cash_tips = models.DecimalField(max_digits=12, decimal_places=2)
    eligible_hours = models.DecimalField(max_digits=9, decimal_places=2)
    employees = models.IntegerField()
    task_id = models.CharField(max_length=36, blank=True, default="")
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["business_date", "location_id"], name="tip_pool_date_location"
            ),
        ]
        ordering = ["-business_date", "location_id"]

    def __str__(self) -> str:
        return f"{self.location_id} {self.business_date}"


class TipStatementDelivery(models.Model):
    """A tip statement for an employee and a pay period: one row per send.

    The row is written ``intended`` (with its Message-ID) before the mail goes
    to the server and marked ``sent`` once the server accepted it, or
    ``not_sent`` when it refused. The content hash is what makes ``email_tips``
    send once: a re-run skips a statement whose hash is that of the latest
    ``sent`` row, sends an ``intended`` one (a crash between send and record)
    again with the same Message-ID, and sends any other as a correction. One
    content may so be sent twice (A, B, then A again), hence no unique
    constraint on it; ``email_tips``' per-statement lock is what keeps two runs
    from both sending.
    """

    class State(models.TextChoices):
        INTENDED = "intended"
        SENT = "sent"
        NOT_SENT = "not_sent", "not sent"

    employee_id = models.CharField(max_length=64)
    period_start = models.DateField()
    period_end = models.DateField()
    content_hash = models.CharField(max_length=64)
    email = models.CharField(max_length=254)
    correction = models.BooleanField(default=False)
    message_id = models.CharField(max_length=255, blank=True, default="")
    task_id = models.CharField(max_length=36, blank=True, default="")
    state = models.CharField(max_length=16, choices=State.choices, default=State.SENT)
    intended_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["employee_id", "period_start", "period_end"],
                name="tip_statement_employee_period",
            ),
        ]
        ordering = ["-pk"]
        verbose_name_plural = "tip statement deliveries"

    def __str__(self) -> str:
        return f"{self.employee_id} {self.period_start}..{self.period_end}"


class FoodHandlerStatus(models.TextChoices):
    VALID = "valid"
    EXPIRING = "expiring", "Expiring within 30 days"
    EXPIRED = "expired"
    MISSING = "missing", "Missing (within 30 days of hire)"
    OVERDUE = "overdue", "Overdue (over 30 days from hire)"


class FoodHandlerCertificate(models.Model):
    """An employee's current food handler card and certificate, as checked by
    ``update_food_handler_pdfs``. ``document`` names the PDF in document storage
    (by content hash); blank when no acceptable certificate is on file."""

    employee_id = models.CharField(max_length=64, unique=True)
    employee_name = models.CharField(max_length=200, blank=True, default="")
    location_id = models.CharField(max_length=32)
    job = models.CharField(max_length=64, blank=True, default="")
    hire_date = models.DateField(null=True, blank=True)
    card_number = models.CharField(max_length=64, blank=True, default="")
    issuer = models.CharField(max_length=200, blank=True, default="")
    issued_on = models.DateField(null=True, blank=True)
    expires_on = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=FoodHandlerStatus.choices)
    document = models.CharField(max_length=255, blank=True, default="")
    content_hash = models.CharField(max_length=64, blank=True, default="")
    source_url = models.CharField(max_length=500, blank=True, default="")
    source_etag = models.CharField(max_length=200, blank=True, default="")
    as_of = models.DateField()
    task_id = models.CharField(max_length=36, blank=True, default="")
    checked_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["location_id", "status"], name="fh_cert_location_status")]
        ordering = ["location_id", "employee_id"]

    def __str__(self) -> str:
        return f"{self.employee_id} ({self.status})"


class FoodHandlerPacket(models.Model):
    """A location's compliance packet: a cover page and every current certificate."""

    location_id = models.CharField(max_length=32, unique=True)
    location_name = models.CharField(max_length=200, blank=True, default="")
    document = models.CharField(max_length=255)
    content_hash = models.CharField(max_length=64)
    counts = models.JSONField(default=dict)
    as_of = models.DateField()
    task_id = models.CharField(max_length=36, blank=True, default="")
    built_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["location_id"]

    def __str__(self) -> str:
        return f"packet {self.location_id} ({self.as_of})"


class FoodHandlerArchivedPacket(models.Model):
    """A packet that is not a location's current one: a report (``update_food_handler_pdfs``
    as of a past date, which changes no current record) or a current packet since replaced.
    Kept ``FOOD_HANDLER_RETENTION_DAYS`` after ``archived_at``, then deleted with its file."""

    class Kind(models.TextChoices):
        REPORT = "report"
        SUPERSEDED = "superseded"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    location_id = models.CharField(max_length=32)
    location_name = models.CharField(max_length=200, blank=True, default="")
    document = models.CharField(max_length=255)
    content_hash = models.CharField(max_length=64)
    counts = models.JSONField(default=dict)
    as_of = models.DateField()
    task_id = models.CharField(max_length=36, blank=True, default="")
    archived_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-archived_at"]

    def __str__(self) -> str:
        return f"{self.kind} packet {self.location_id} ({self.as_of})"


class FoodHandlerDeparture(models.Model):
    """An employee who left the roster (or stopped handling food), and the certificate we
    held for them: deleted from storage ``FOOD_HANDLER_RETENTION_DAYS`` after
    ``departed_at`` (``purged_at``), when the person is still gone. Removed when they
    come back, and once no link signed before the purge can still be valid."""

    employee_id = models.CharField(max_length=64, unique=True)
    location_id = models.CharField(max_length=32)
    document = models.CharField(max_length=255, blank=True, default="")
    departed_at = models.DateTimeField(default=timezone.now, db_index=True)
    purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["departed_at"]

    def __str__(self) -> str:
        return f"{self.employee_id} left {self.departed_at:%Y-%m-%d}"


def validate_email_list(value: str) -> None:
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

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
