"""What daily_sales and get_mpvs store: a location-day's sales, its meal period violations."""

from __future__ import annotations

from django.db import models


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
