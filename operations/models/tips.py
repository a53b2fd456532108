"""What the tips jobs store: shares and pools, and the statements stated."""

from __future__ import annotations

from decimal import Decimal

from django.db import models


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
