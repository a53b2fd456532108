"""get_mpvs: per location, the day's timeclock shifts -> the meal period violations they owe.

The rule (California meal periods, as the group applies it to every location;
docs/jobs.md repeats it). Times are worked time: clock-in to clock-out minus the
unpaid meal breaks (``kind: "meal"``); paid rest breaks (``kind: "rest"``) count as
work and are not meal periods. Meals are taken in the order they started.

* First meal period, required when the shift is over 5 hours worked. Waived (no
  violation) when the shift's ``first_meal_waiver`` is set and it is at most 6 hours.
  Otherwise: no meal at all -> ``missing_first_meal``; the first meal starts after
  5:00 hours worked -> ``late_first_meal`` (starting at exactly 5:00 is on time);
  it lasts under 30 minutes -> ``short_first_meal``.
* Second meal period, required when the shift is over 10 hours worked. Waived when
  ``second_meal_waiver`` is set, the shift is at most 12 hours and the first-meal
  waiver flag is not set. Otherwise: fewer than two meals -> ``missing_second_meal``;
  the second starts after 10:00 hours worked -> ``late_second_meal``; it lasts under
  30 minutes -> ``short_second_meal``.
* One violation per meal period, the first that applies in the order missing,
  late, short. Each violation owes one hour of premium pay at the shift's hourly
  rate: at most one premium per shift per meal period, so at most two per shift.
  Each shift stands alone (a split shift is two shifts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from tasks.tracker import TaskHandle

from ..models import MealPeriodViolation
from ..sources import timeclock_source
from .columns import max_length
from .locations import MalformedData, each_location
from .numbers import finite_decimal

CENT = Decimal("0.01")
MEAL_MINIMUM = timedelta(minutes=30)
FIRST_DUE = timedelta(hours=5)
FIRST_WAIVABLE = timedelta(hours=6)
SECOND_DUE = timedelta(hours=10)
SECOND_WAIVABLE = timedelta(hours=12)
LONGEST_SHIFT = timedelta(hours=24)
# What a MealPeriodViolation row holds (operations/jobs/columns.py).
MAX_LENGTHS = {
    name: max_length(MealPeriodViolation, name)
    for name in ("shift_id", "employee_id", "employee_name")
}
KINDS = [kind.value for kind in MealPeriodViolation.Kind]


@dataclass(frozen=True)
class ShiftResult:
    """One shift checked: its worked time and at most one violation per meal period."""

    shift: dict[str, Any]
    clock_in: datetime
    clock_out: datetime
    worked: timedelta
    hourly_rate: Decimal
    first_meal: str
    second_meal: str

    @property
    def premium_hours(self) -> int:
        return int(bool(self.first_meal)) + int(bool(self.second_meal))

    @property
    def premium_pay(self) -> Decimal:
        return (self.hourly_rate * self.premium_hours).quantize(CENT, ROUND_HALF_UP)


def _timestamp(value: Any, where: str, tz: ZoneInfo) -> datetime:
    if not isinstance(value, str):
        raise MalformedData(f"{where}: {value!r} is not a timestamp")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MalformedData(f"{where}: {value!r} is not a timestamp") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


def _rate(value: Any, where: str) -> Decimal:
    rate = finite_decimal(value)
    if rate is None or rate <= 0:
        raise MalformedData(f"{where}: not a rate ({value!r})")
    return rate


def _meal_violation(
    meals: list[tuple[datetime, datetime]],
    index: int,
    clock_in: datetime,
    due: timedelta,
    name: str,
) -> str:
    """The violation of meal ``index`` (0 first, 1 second), or "" when it was compliant."""
    if len(meals) <= index:
        return f"missing_{name}_meal"
    start, end = meals[index]
    unpaid_before = sum((e - s for s, e in meals[:index]), timedelta())
    if start - clock_in - unpaid_before > due:
        return f"late_{name}_meal"
    if end - start < MEAL_MINIMUM:
        return f"short_{name}_meal"
    return ""


def check_shift(shift: Any, index: int, *, business_date: date, tz: ZoneInfo) -> ShiftResult:
    """Apply the rule to one shift; MalformedData when a field cannot be read."""
    if not isinstance(shift, dict):
        raise MalformedData(f"shift #{index}: not an object")
    where = f"shift {shift.get('shift_id') or '#' + str(index)}"
    for key in ("shift_id", "employee_id"):
        if not isinstance(shift.get(key), str) or not shift[key]:
            raise MalformedData(f"{where}: {key} missing")
    for key, limit in MAX_LENGTHS.items():
        if len(str(shift.get(key) or "")) > limit:
            raise MalformedData(f"{where}: {key} longer than {limit} characters")
    if shift.get("business_date") not in (None, business_date.isoformat()):
        raise MalformedData(
            f"{where}: business_date {shift.get('business_date')!r} "
            f"is not {business_date.isoformat()}"
        )
    clock_in = _timestamp(shift.get("clock_in"), f"{where} clock_in", tz)
    clock_out = _timestamp(shift.get("clock_out"), f"{where} clock_out", tz)
    if not timedelta() < clock_out - clock_in <= LONGEST_SHIFT:
        raise MalformedData(f"{where}: clock_out is not within 24 hours after clock_in")
    breaks = shift.get("breaks") or []
    if not isinstance(breaks, list):
        raise MalformedData(f"{where}: 'breaks' is not a list")
    meals: list[tuple[datetime, datetime]] = []
    for n, entry in enumerate(breaks):
        if not isinstance(entry, dict) or entry.get("kind") not in ("meal", "rest"):
            raise MalformedData(f"{where}: breaks[{n}] is not a meal or rest break")
        start = _timestamp(entry.get("start"), f"{where} breaks[{n}].start", tz)
        end = _timestamp(entry.get("end"), f"{where} breaks[{n}].end", tz)
        if not clock_in <= start < end <= clock_out:
            raise MalformedData(f"{where}: breaks[{n}] is not within the shift")
        if entry["kind"] == "meal":
            meals.append((start, end))
    meals.sort()
    if any(later[0] < earlier[1] for earlier, later in zip(meals, meals[1:], strict=False)):
        raise MalformedData(f"{where}: meal breaks overlap")
    worked = clock_out - clock_in - sum((e - s for s, e in meals), timedelta())
    rate = _rate(shift.get("hourly_rate"), f"{where} hourly_rate")
    first_waiver = shift.get("first_meal_waiver") is True
    first = second = ""
    if worked > FIRST_DUE and not (first_waiver and worked <= FIRST_WAIVABLE):
        first = _meal_violation(meals, 0, clock_in, FIRST_DUE, "first")
    if worked > SECOND_DUE and not (
        shift.get("second_meal_waiver") is True and worked <= SECOND_WAIVABLE and not first_waiver
    ):
        second = _meal_violation(meals, 1, clock_in, SECOND_DUE, "second")
    return ShiftResult(shift, clock_in, clock_out, worked, rate, first, second)


def check_shifts(shifts: list[Any], *, business_date: date, tz: ZoneInfo) -> list[ShiftResult]:
    """Every shift of one location-day; MalformedData on the first unreadable one."""
    results = [
        check_shift(shift, n, business_date=business_date, tz=tz) for n, shift in enumerate(shifts)
    ]
    seen: set[tuple[str, str]] = set()
    for result in results:
        key = (result.shift["employee_id"], result.shift["shift_id"])
        if key in seen:
            raise MalformedData(f"shift {key[1]}: appears twice")
        seen.add(key)
    return results


def save_violations(
    business_date: date, location: dict, results: list[ShiftResult], task_id: str
) -> None:
    """Replace the location-day's rows in one transaction: a re-run never duplicates, and a
    shift that no longer violates (corrected punches) loses its row."""
    now = timezone.now()
    rows = [
        MealPeriodViolation(
            business_date=business_date,
            location_id=location["id"],
            location_name=location.get("name", ""),
            employee_id=r.shift["employee_id"],
            employee_name=str(r.shift.get("employee_name") or ""),
            shift_id=r.shift["shift_id"],
            clock_in=r.clock_in,
            clock_out=r.clock_out,
            hours_worked=(Decimal(int(r.worked.total_seconds())) / 3600).quantize(
                CENT, ROUND_HALF_UP
            ),
            first_meal=r.first_meal,
            second_meal=r.second_meal,
            hourly_rate=r.hourly_rate,
            premium_hours=r.premium_hours,
            premium_pay=r.premium_pay,
            task_id=task_id,
            computed_at=now,
        )
        for r in results
        if r.premium_hours
    ]
    keys = ["business_date", "location_id", "employee_id", "shift_id"]
    update = [
        f.name for f in MealPeriodViolation._meta.concrete_fields if f.name not in (*keys, "id")
    ]
    with transaction.atomic():
        MealPeriodViolation.objects.filter(
            business_date=business_date, location_id=location["id"]
        ).delete()
        # An upsert, so that a concurrent run of the same day cannot make us fail.
        MealPeriodViolation.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=keys, update_fields=update
        )


def run(task: TaskHandle, params: dict[str, Any]) -> dict[str, Any]:
    """Check every requested location; a bad location is an error, not the end."""
    source = timeclock_source()

    def check(business_date: date, location: dict, tz: ZoneInfo) -> list[ShiftResult]:
        shifts = source.fetch_shifts(business_date, str(location["id"]))
        results = check_shifts(shifts, business_date=business_date, tz=tz)
        save_violations(business_date, location, results, task.task_id)
        return results

    done, failed = each_location(task, source, params, check, data="timeclock", verb="checked")
    checked = [result for results in done.values() for result in results]
    violations = dict.fromkeys(KINDS, 0)
    for result in checked:
        for kind in (result.first_meal, result.second_meal):
            if kind:
                violations[kind] += 1
    return {
        "business_date": params["business_date"].isoformat(),
        "locations": len(done) + len(failed),
        "checked": sorted(done),
        "failed_locations": failed,
        "shifts_checked": len(checked),
        "shifts_with_violations": sum(1 for r in checked if r.premium_hours),
        "violations": violations,
        "premium_hours": sum(r.premium_hours for r in checked),
        "premium_pay": str(sum((r.premium_pay for r in checked), Decimal("0.00"))),
    }
