"""The parameters of each operation, as DRF serializers.

Every parameter has a default, so ``{}`` launches a normal run; unknown keys are
refused so that a typo is a 400, not a silently ignored option.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from .jobs.tip_policy import PayPeriods, PolicyFileError, load_policies
from .sources import SourceError, connect


class StrictParams(serializers.Serializer):
    """Refuses unknown parameters."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["unknown parameter"] for key in unknown})
        return super().to_internal_value(data)


# Business dates before this are refused as typos, and nothing near date.min or
# date.max reaches the date arithmetic of a default or a range.
EARLIEST_DATE = date(2000, 1, 1)


class BusinessDateField(serializers.DateField):
    """A date a back office can mean: from EARLIEST_DATE, never past today in TIME_ZONE."""

    def to_internal_value(self, value: Any) -> date:
        parsed = super().to_internal_value(value)
        if parsed < EARLIEST_DATE:
            raise serializers.ValidationError(f"is before {EARLIEST_DATE.isoformat()}")
        if parsed > timezone.localdate():
            raise serializers.ValidationError("is in the future")
        return parsed


class NoParams(StrictParams):
    """An operation that takes no parameters."""


def yesterday() -> date:
    """The previous business date in TIME_ZONE."""
    return timezone.localdate() - timedelta(days=1)


class DailySalesParams(StrictParams):
    # The setting naming the source whose locations are the valid ``locations``.
    source_setting = "SALES_SOURCE_URL"

    business_date = BusinessDateField(
        required=False, help_text="Business date (YYYY-MM-DD); default yesterday in TIME_ZONE."
    )
    locations = serializers.ListField(
        child=serializers.CharField(max_length=32),
        required=False,
        allow_empty=True,
        help_text="Location ids; default all locations of the sales source.",
    )

    def validate_locations(self, value: list[str]) -> list[str]:
        """Unknown ids are refused now when the source can tell us quickly; otherwise
        the job reports them (a slow or broken source must not hang a launch)."""
        from django.conf import settings

        value = list(dict.fromkeys(value))
        if not value:
            return value
        try:
            known = {
                str(loc.get("id"))
                for loc in connect(
                    getattr(settings, self.source_setting), quick=True
                ).list_locations()
            }
        except (SourceError, AttributeError):
            return value
        unknown = [loc for loc in value if loc not in known]
        if unknown:
            raise serializers.ValidationError(f"unknown location(s): {', '.join(unknown)}")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs.setdefault("business_date", yesterday())
        attrs.setdefault("locations", [])
        return attrs


class MealPeriodParams(DailySalesParams):
    """get_mpvs: the same business date and locations, checked against the timeclock."""

    source_setting = "TIMECLOCK_SOURCE_URL"

    locations = serializers.ListField(
        child=serializers.CharField(max_length=32),
        required=False,
        allow_empty=True,
        help_text="Location ids; default all locations of the timeclock source.",
    )


def pay_periods() -> PayPeriods | None:
    """The tip policy's pay periods; None when the file is unusable (the job says why)."""
    try:
        return load_policies().pay_periods
    except PolicyFileError:
        return None


def previous_pay_period() -> tuple[date, date]:
    """The last pay period of the tip policy that is over in TIME_ZONE (by default the
    previous Monday to Sunday)."""
    return (pay_periods() or PayPeriods()).last_complete(timezone.localdate())


MAX_PERIOD_DAYS = 31


class PayPeriodParams(StrictParams):
    """A pay period (default the previous pay period of the tip policy), over by today."""

    period_start = BusinessDateField(
        required=False, help_text="First business date; default Monday of the previous week."
    )
    period_end = BusinessDateField(
        required=False, help_text="Last business date; default the Sunday after period_start."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start: date | None = attrs.get("period_start")
        end: date | None = attrs.get("period_end")
        if end is None:
            if start is None:
                start, end = previous_pay_period()
            else:
                end = (pay_periods() or PayPeriods()).containing(start)[1]
        elif start is None:
            start = (pay_periods() or PayPeriods()).containing(end)[0]
        if end < start:
            raise serializers.ValidationError({"period_end": ["is before period_start"]})
        if (end - start).days + 1 > MAX_PERIOD_DAYS:
            raise serializers.ValidationError(
                {"period_end": [f"a pay period is at most {MAX_PERIOD_DAYS} days"]}
            )
        if end >= timezone.localdate():
            raise serializers.ValidationError({"period_end": ["is not over yet"]})
        attrs["period_start"], attrs["period_end"] = start, end
        return attrs


class TransformTipsParams(PayPeriodParams):
    # The setting naming the source whose locations are the valid ``locations``.
    source_setting = "SALES_SOURCE_URL"

    locations = serializers.ListField(
        child=serializers.CharField(max_length=32),
        required=False,
        allow_empty=True,
        help_text="Location ids; default all locations of the sales source.",
    )

    validate_locations = DailySalesParams.validate_locations

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        attrs.setdefault("locations", [])
        return attrs


class EmailTipsParams(PayPeriodParams):
    """email_tips: a whole pay period of the tip policy, which transform_tips has done."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        periods = pay_periods()
        start, end = attrs["period_start"], attrs["period_end"]
        if periods is not None and not periods.is_period(start, end):
            first, last = periods.containing(start)
            raise serializers.ValidationError(
                {
                    "period_end": [
                        f"not a pay period of the tip policy ({periods.describe()}; "
                        f"{start.isoformat()} is in {first.isoformat()}..{last.isoformat()})"
                    ]
                }
            )
        return attrs


class FoodHandlerParams(StrictParams):
    source_setting = "ROSTER_SOURCE_URL"

    locations = serializers.ListField(
        child=serializers.CharField(max_length=32),
        required=False,
        allow_empty=True,
        help_text="Location ids; default every location of the roster.",
    )
    as_of = BusinessDateField(
        required=False,
        help_text=(
            "Date the statuses are computed for; default today. A past date is a report: "
            "a packet of its own, no stored status or current packet changed."
        ),
    )

    def validate_locations(self, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # No default date here: the job takes today when it runs, so that a launch just
        # before midnight is still today's run, not a report of yesterday.
        attrs.setdefault("locations", [])
        return attrs


class FoodHandlerLinksParams(StrictParams):
    locations = serializers.ListField(
        child=serializers.CharField(max_length=32),
        required=False,
        allow_empty=True,
        help_text="Location ids; default every location with certificates on file.",
    )

    def validate_locations(self, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs.setdefault("locations", [])
        return attrs


class InvoiceSyncParams(StrictParams):
    full = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Ignore the watermark and read every invoice (unchanged ones are skipped).",
    )
    updated_since = serializers.DateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Read invoices changed after this instant instead of the watermark.",
    )


def to_json(validated: dict[str, Any]) -> dict[str, Any]:
    """Validated parameters as JSON (stored with the task and sent to the worker)."""
    out: dict[str, Any] = {}
    for key, value in validated.items():
        out[key] = value.isoformat() if isinstance(value, date | datetime) else value
    return out
