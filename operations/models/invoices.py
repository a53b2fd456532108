"""What invoice_sync stores: invoices, the watermark, AP batches and their claims."""

from __future__ import annotations

import uuid

from django.db import models


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
