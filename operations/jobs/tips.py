"""transform_tips: per location, each day's tips -> every employee's share, and the payroll file.

The rule (docs/jobs.md repeats it):

* Each location-day has two pools, distributed separately: the card pool (the
  ``tip`` of every non-cash payment of every closed check; voided checks count
  for nothing) and the cash pool (the cash tips declared that day).
* A pool goes to the employees who worked that day, in proportion to their
  weight: hours worked (every shift of the day, unpaid meal breaks excluded, as
  ``mpvs.check_shifts`` computes them) times the points of the shift's job in
  the location's policy (``tip_policy``). Jobs the policy does not list get
  nothing; a policy listing a manager or supervisor job is refused.
* Every pool is paid out to the cent (largest remainder): each share is the
  pool x weight / total weight rounded down to the cent, and the cents left
  over go one each to the largest fractional remainders. Ties go to the larger
  weight, then to the smaller employee_id, so a run is reproducible.

A location without a usable policy, a location-day whose data is missing or
malformed, or one that has tips but no eligible hours, is an ``error`` and the
job goes on; only a run where no location could be done fails. A re-run
replaces the period's rows of every location it transformed (failed days then
have none), in one transaction per location.

The payroll import file holds every share stored for the period, whichever run
stored it, and the result says so: ``payroll`` gives the file's own rows and
total (summed from the rows written) and, per location, the run whose shares it
holds. A location in the file that this run did not compute is listed in
``payroll.kept_locations``; when this run tried it and could not transform it at
all, an ``error`` also says that the file keeps an earlier run's shares, and
which. Nothing from an earlier run is in the file without the task saying so.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from tasks.tracker import TaskHandle

from ..models import TipPool, TipShare
from ..sources import (
    Connector,
    DataNotFound,
    SourceError,
    accounting_target,
    sales_source,
    timeclock_source,
)
from . import JobFailed
from .columns import max_amount, max_length
from .daily_sales import summarise_checks
from .locations import MalformedData, location_zone
from .mpvs import check_shifts
from .numbers import finite_decimal
from .tip_policy import LocationPolicy, PolicyFileError, TipPolicies, load_policies

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
MICROS_PER_HOUR = 3_600_000_000
CSV_HEADER = [
    "employee_id",
    "employee_name",
    "location_id",
    "pay_period",
    "hours",
    "card_tips",
    "cash_tips",
    "total",
]


# What a TipShare holds: a longer value in a shift that shares is a malformed record
# (an error for its location-day), not a DataError ending the job at the save.
MAX_EMPLOYEE_ID = max_length(TipShare, "employee_id")
MAX_EMPLOYEE_NAME = max_length(TipShare, "employee_name")
MAX_JOB = max_length(TipShare, "job")
MAX_SHARE = min(max_amount(TipShare, "card_tips"), max_amount(TipShare, "cash_tips"))
MAX_POOL = min(max_amount(TipPool, "card_tips"), max_amount(TipPool, "cash_tips"))


class NoEligibleHours(ValueError):
    """A location-day has tips but nobody the policy lets share them."""


class UnpayablePool(ValueError):
    """A location-day whose pool cannot be paid: it ends negative, or beyond our columns."""


@dataclass(frozen=True)
class Worker:
    """One employee's eligible time at one location-day; ``weight`` is hours x points."""

    employee_id: str
    employee_name: str
    job: str
    micros: int
    weight: Fraction

    @property
    def hours(self) -> Decimal:
        return (Decimal(self.micros) / MICROS_PER_HOUR).quantize(CENT, ROUND_HALF_UP)

    @property
    def points(self) -> Decimal:
        """The job's points (a weighted mean if the employee worked two jobs that day)."""
        exact = self.weight / Fraction(self.micros, MICROS_PER_HOUR)
        return (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(CENT, ROUND_HALF_UP)


@dataclass
class Day:
    """One location-day distributed: its pools and the shares that add up to them."""

    business_date: date
    card: Decimal
    cash: Decimal
    workers: list[Worker]
    card_shares: dict[str, Decimal]
    cash_shares: dict[str, Decimal]


@dataclass
class LocationOutcome:
    days: list[Day] = field(default_factory=list)
    failed_days: dict[str, str] = field(default_factory=dict)
    missing_days: int = 0


def distribute(pool: Decimal, weights: Mapping[str, Fraction | Decimal]) -> dict[str, Decimal]:
    """Split ``pool`` (whole cents) by weight so that the shares add up to it exactly.

    Largest remainder; ties go to the larger weight, then the smaller key.
    """
    cents = int((pool / CENT).to_integral_value())
    if Decimal(cents) * CENT != pool or cents < 0:
        raise ValueError(f"pool {pool} is not a non-negative amount in cents")
    exact = {key: Fraction(w) for key, w in weights.items() if w > 0}
    total = sum(exact.values(), Fraction(0))
    if cents and not total:
        raise NoEligibleHours("no eligible hours")
    shares = {key: 0 for key in weights}
    remainders = []
    for key, weight in exact.items():
        quota = cents * weight / total
        shares[key] = math.floor(quota)
        remainders.append((quota - shares[key], weight, key))
    left = cents - sum(shares.values())
    remainders.sort(key=lambda r: (-r[0], -r[1], r[2]))
    for _, _, key in remainders[:left]:
        shares[key] += 1
    return {key: Decimal(c) * CENT for key, c in shares.items()}


def _cents(value: Any, where: str) -> Decimal:
    """An amount in whole cents; negative is a reversal, which the pool takes in."""
    amount = finite_decimal(value)
    if amount is None:
        raise MalformedData(f"{where}: not an amount ({value!r})")
    if amount != amount.quantize(CENT):
        raise MalformedData(f"{where}: not an amount in cents ({value!r})")
    return amount.quantize(CENT)


def payable(pool: Decimal, name: str) -> Decimal:
    """A pool that can be paid out: not negative, within what our rows hold."""
    if pool < 0:
        raise UnpayablePool(
            f"the {name} pool ends negative (${pool}): reversals exceed the day's tips"
        )
    if pool > MAX_POOL:
        raise UnpayablePool(f"the {name} pool (${pool}) is beyond ${MAX_POOL}, what a pool holds")
    return pool


def card_pool(checks: list[Any], *, business_date: date, tz: ZoneInfo) -> Decimal:
    """The tips of every non-cash payment of the closed checks.

    The export is first read as daily_sales reads it: a location-day that job refuses
    as malformed is refused here too, rather than paid from a damaged export.
    """
    summarise_checks(checks, business_date=business_date, tz=tz)
    pool = Decimal(0)
    for index, check in enumerate(checks):
        where = f"check {check.get('check_id') or '#' + str(index)}"
        status = check.get("status")
        if status == "voided":
            continue
        if status != "closed":
            raise MalformedData(f"{where}: status {status!r} is neither closed nor voided")
        payments = check.get("payments") or []
        if not isinstance(payments, list):
            raise MalformedData(f"{where}: 'payments' is not a list")
        for n, payment in enumerate(payments):
            if not isinstance(payment, dict) or not isinstance(payment.get("type"), str):
                raise MalformedData(f"{where}: payments[{n}] has no type")
            if payment["type"] != "cash":
                pool += _cents(payment.get("tip", 0), f"{where} payments[{n}].tip")
    return pool


def cash_pool(declarations: list[Any]) -> Decimal:
    """The cash tips declared that day, whoever declared them (they go into the pool)."""
    pool = Decimal(0)
    for n, row in enumerate(declarations):
        if not isinstance(row, dict) or not isinstance(row.get("employee_id"), str):
            raise MalformedData(f"cash tip declaration #{n}: no employee_id")
        pool += _cents(row.get("amount"), f"cash tip declaration of {row['employee_id']}")
    return pool


def eligible_workers(
    shifts: list[Any], policy: LocationPolicy, *, business_date: date, tz: ZoneInfo
) -> list[Worker]:
    """Employees whose jobs share, with their worked time (meals excluded) and weight."""
    micros: dict[str, int] = defaultdict(int)
    weights: dict[str, Fraction] = defaultdict(Fraction)
    names: dict[str, str] = {}
    jobs: dict[str, set[str]] = defaultdict(set)
    for result in check_shifts(shifts, business_date=business_date, tz=tz):
        job = result.shift.get("job")
        if not isinstance(job, str) or not job:
            raise MalformedData(f"shift {result.shift['shift_id']}: job missing")
        points = policy.points_for(job)
        if not points:
            continue
        where = f"shift {result.shift['shift_id']}"
        employee_id = result.shift["employee_id"]
        name = str(result.shift.get("employee_name") or "")
        for key, value, limit in (
            ("employee_id", employee_id, MAX_EMPLOYEE_ID),
            ("employee_name", name, MAX_EMPLOYEE_NAME),
            ("job", job, MAX_JOB),
        ):
            if len(value) > limit:
                raise MalformedData(f"{where}: {key} longer than {limit} characters")
        worked = result.worked // timedelta(microseconds=1)
        micros[employee_id] += worked
        weights[employee_id] += Fraction(worked, MICROS_PER_HOUR) * Fraction(points)
        names[employee_id] = name
        jobs[employee_id].add(job)
    return [
        Worker(e, names[e], _jobs_label(jobs[e]), micros[e], weights[e])
        for e in sorted(micros)
        if micros[e] > 0
    ]


def _jobs_label(jobs: set[str]) -> str:
    """The day's jobs, "Bartender / Server"; shortened to fit the column when two long
    names, each of which fits, do not fit together."""
    label = " / ".join(sorted(jobs))
    return label if len(label) <= MAX_JOB else label[: MAX_JOB - 1] + "…"


def transform_day(
    sales: Connector,
    timeclock: Connector,
    business_date: date,
    location_id: str,
    tz: ZoneInfo,
    policy: LocationPolicy,
) -> Day:
    """Both pools of one location-day, distributed; raises when the day cannot be done."""
    card = payable(
        card_pool(
            sales.fetch_checks(business_date, location_id), business_date=business_date, tz=tz
        ),
        "card",
    )
    cash = payable(cash_pool(sales.fetch_cash_tips(business_date, location_id)), "cash")
    workers = eligible_workers(
        timeclock.fetch_shifts(business_date, location_id),
        policy,
        business_date=business_date,
        tz=tz,
    )
    if (card or cash) and not workers:
        raise NoEligibleHours(
            f"${card + cash} of tips but no eligible hours "
            "(nobody worked in a job of the tip policy)"
        )
    weights = {w.employee_id: w.weight for w in workers}
    day = Day(
        business_date, card, cash, workers, distribute(card, weights), distribute(cash, weights)
    )
    for employee_id in weights:
        if max(day.card_shares[employee_id], day.cash_shares[employee_id]) > MAX_SHARE:
            raise UnpayablePool(f"employee {employee_id}'s share is beyond ${MAX_SHARE}")
    return day


def save_location(location: dict, start: date, end: date, days: list[Day], task_id: str) -> None:
    """Replace the period's rows of one location in one transaction: never a duplicate."""
    now = timezone.now()
    location_id = str(location["id"])
    shares = [
        TipShare(
            business_date=day.business_date,
            location_id=location_id,
            location_name=str(location.get("name") or ""),
            employee_id=w.employee_id,
            employee_name=w.employee_name,
            job=w.job,
            hours=w.hours,
            points=w.points,
            card_tips=day.card_shares[w.employee_id],
            cash_tips=day.cash_shares[w.employee_id],
            task_id=task_id,
            computed_at=now,
        )
        for day in days
        for w in day.workers
    ]
    pools = [
        TipPool(
            business_date=day.business_date,
            location_id=location_id,
            card_tips=day.card,
            cash_tips=day.cash,
            eligible_hours=sum((w.hours for w in day.workers), ZERO),
            employees=len(day.workers),
            task_id=task_id,
            computed_at=now,
        )
        for day in days
    ]
    period = {"location_id": location_id, "business_date__range": (start, end)}
    with transaction.atomic():
        TipShare.objects.filter(**period).delete()
        TipPool.objects.filter(**period).delete()
        # Upserts, so that a concurrent run of the same period cannot make us fail.
        TipShare.objects.bulk_create(
            shares,
            update_conflicts=True,
            unique_fields=["business_date", "location_id", "employee_id"],
            update_fields=[
                "location_name",
                "employee_name",
                "job",
                "hours",
                "points",
                "card_tips",
                "cash_tips",
                "task_id",
                "computed_at",
            ],
        )
        TipPool.objects.bulk_create(
            pools,
            update_conflicts=True,
            unique_fields=["business_date", "location_id"],
            update_fields=[
                "card_tips",
                "cash_tips",
                "eligible_hours",
                "employees",
                "task_id",
                "computed_at",
            ],
        )


def transform_location(
    task: TaskHandle,
    sales: Connector,
    timeclock: Connector,
    location: dict,
    policy: LocationPolicy,
    days: list[date],
) -> LocationOutcome:
    """Every day of the period at one location; a bad day is an error naming it."""
    outcome = LocationOutcome()
    location_id = str(location["id"])
    tz = location_zone(location)
    for day in days:
        where = f"location {location_id}, {day.isoformat()}"
        try:
            outcome.days.append(transform_day(sales, timeclock, day, location_id, tz, policy))
            continue
        except DataNotFound as exc:
            outcome.missing_days += 1
            reason = f"missing data: {exc}"
        except (SourceError, MalformedData) as exc:
            reason = f"malformed data: {exc}"
        except (NoEligibleHours, UnpayablePool) as exc:
            reason = str(exc)
        outcome.failed_days[day.isoformat()] = reason
        task.error(f"{where}: {reason}")
    return outcome


@dataclass
class PayrollFile:
    """The payroll import file and what it holds, summed from the rows written."""

    content: bytes
    rows: int
    card: Decimal
    cash: Decimal
    # location -> the runs whose shares the file holds for it, and when they computed them
    sources: dict[str, dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "card_tips": str(self.card),
            "cash_tips": str(self.cash),
            "total": str(self.card + self.cash),
        }


def payroll_file(start: date, end: date) -> PayrollFile:
    """One row per employee and location over the period, from every share stored for it."""
    shares = TipShare.objects.filter(business_date__range=(start, end))
    rows = (
        shares.values("location_id", "employee_id")
        .annotate(hours=Sum("hours"), card=Sum("card_tips"), cash=Sum("cash_tips"))
        .order_by("location_id", "employee_id")
    )
    names = dict(shares.order_by("business_date").values_list("employee_id", "employee_name"))
    sources: dict[str, dict[str, Any]] = {}
    for location_id, task_id, computed_at in (
        shares.values_list("location_id", "task_id", "computed_at")
        .order_by("location_id", "computed_at")
        .distinct()
    ):
        source = sources.setdefault(location_id, {"task_ids": [], "computed_at": None})
        if task_id not in source["task_ids"]:
            source["task_ids"].append(task_id)
        source["computed_at"] = computed_at.isoformat(timespec="seconds")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    period = f"{start.isoformat()}..{end.isoformat()}"
    count, card_total, cash_total = 0, ZERO, ZERO
    for row in rows:
        card, cash = Decimal(row["card"]).quantize(CENT), Decimal(row["cash"]).quantize(CENT)
        writer.writerow(
            [
                row["employee_id"],
                names.get(row["employee_id"], ""),
                row["location_id"],
                period,
                Decimal(row["hours"]).quantize(CENT),
                card,
                cash,
                card + cash,
            ]
        )
        count, card_total, cash_total = count + 1, card_total + card, cash_total + cash
    return PayrollFile(out.getvalue().encode("utf-8"), count, card_total, cash_total, sources)


def kept_shares(
    task: TaskHandle, payroll: PayrollFile, done: dict[str, Any], failed: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """The file's locations this run did not compute, each with the run it keeps; one that
    this run tried and could not transform is an error saying the file keeps old shares."""
    kept: dict[str, dict[str, Any]] = {}
    for location_id, source in payroll.sources.items():
        if location_id in done:
            continue
        runs = ", ".join(source["task_ids"])
        kept[location_id] = {
            "task_ids": source["task_ids"],
            "computed_at": source["computed_at"],
            "tried_by_this_run": location_id in failed,
        }
        if location_id in failed:
            task.error(
                f"location {location_id}: this run could not transform it "
                f"({failed[location_id]}); the payroll file keeps the shares of run "
                f"{runs} from {source['computed_at']}"
            )
    return kept


def location_figures(outcome: LocationOutcome) -> dict[str, Any]:
    """What the result says of one location: counts and sums, nobody's share."""
    card = sum((d.card for d in outcome.days), ZERO)
    cash = sum((d.cash for d in outcome.days), ZERO)
    return {
        "days": len(outcome.days),
        "employees": len({w.employee_id for d in outcome.days for w in d.workers}),
        "hours": str(sum((w.hours for d in outcome.days for w in d.workers), ZERO)),
        "card_tips": str(card),
        "cash_tips": str(cash),
        "total": str(card + cash),
        "failed_days": outcome.failed_days,
    }


def _locations(sales: Connector, wanted: list[str]) -> tuple[dict[str, dict], list[str]]:
    try:
        known = {str(loc["id"]): loc for loc in sales.list_locations() if isinstance(loc, dict)}
    except (SourceError, KeyError) as exc:
        raise JobFailed(f"sales source unusable: {exc}") from exc
    wanted = list(wanted or sorted(known))
    unknown = [loc for loc in wanted if loc not in known]
    if unknown:
        raise JobFailed(f"unknown location(s): {', '.join(unknown)}")
    return known, wanted


def _load_policies() -> TipPolicies:
    try:
        return load_policies()
    except PolicyFileError as exc:
        raise JobFailed(str(exc)) from exc


def run(task: TaskHandle, params: dict[str, Any]) -> dict[str, Any]:
    """Transform every requested location; a bad location or day is an error, not the end."""
    start: date = params["period_start"]
    end: date = params["period_end"]
    period = f"{start.isoformat()}..{end.isoformat()}"
    if end >= timezone.localdate():
        raise JobFailed(f"pay period {period} is not over yet")
    loaded = _load_policies()
    sales, timeclock = sales_source(), timeclock_source()
    known, wanted = _locations(sales, params.get("locations") or [])
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    total = len(wanted)
    task.progress(0, f"{period}: 0 of {total} locations", total=total)
    done: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    only_missing = True
    for i, location_id in enumerate(wanted, 1):
        policy = loaded.usable.get(location_id)
        if policy is None:
            only_missing = False
            failed[location_id] = (
                f"tip policy refused: {loaded.refused[location_id]}"
                if location_id in loaded.refused
                else "no tip policy"
            )
            task.error(f"location {location_id}: {failed[location_id]}")
        else:
            outcome = transform_location(task, sales, timeclock, known[location_id], policy, days)
            if outcome.days:
                save_location(known[location_id], start, end, outcome.days, task.task_id)
                done[location_id] = location_figures(outcome)
            else:
                only_missing = only_missing and outcome.missing_days == len(days)
                first = next(iter(outcome.failed_days.items()))
                failed[location_id] = f"no day could be transformed ({first[0]}: {first[1]})"
        task.progress(i, f"{period}: location {location_id} ({i} of {total})")
    if not done:
        if only_missing:
            raise JobFailed(f"no sales or timeclock data for {period}")
        reasons = "; ".join(f"{k}: {v}" for k, v in list(failed.items())[:3])
        raise JobFailed(f"no location could be transformed ({reasons})")
    name = f"tips-{start.isoformat()}-{end.isoformat()}.csv"
    payroll = payroll_file(start, end)
    kept = kept_shares(task, payroll, done, failed)
    try:
        written: str | None = accounting_target().send_file(
            "payroll", name, payroll.content, "text/csv"
        )
    except SourceError as exc:
        written = None
        task.error(
            f"payroll file {name} not written (the shares are stored; re-run to write it): {exc}"
        )
    card = sum((Decimal(v["card_tips"]) for v in done.values()), ZERO)
    cash = sum((Decimal(v["cash_tips"]) for v in done.values()), ZERO)
    return {
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "locations": done,
        "totals": {
            "locations": len(done),
            "days": sum(v["days"] for v in done.values()),
            "employees": sum(v["employees"] for v in done.values()),
            "hours": str(sum((Decimal(v["hours"]) for v in done.values()), ZERO)),
            "card_tips": str(card),
            "cash_tips": str(cash),
            "total": str(card + cash),
        },
        "payroll_file": written,
        "payroll": {**payroll.summary(), "file": written, "kept_locations": kept},
        "failed_locations": failed,
    }
