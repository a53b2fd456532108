"""What the food handler jobs store: certificates, packets, reports, departures."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


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
