"""daily_sales: per location, the day's checks -> one stored DailySalesSummary.

Definitions (docs/jobs.md repeats them):

* a voided check counts only in ``voids`` (all its items) and ``voided_check_count``;
* gross sales: quantity x unit price of the items that are not voided;
* voids: quantity x unit price of voided items (plus every item of voided checks);
* net sales: gross - discounts - refunds;
* tax, tips, service charges: as recorded on the check;
* guest count, check count: over checks that are not voided;
* average check: net sales / check count;
* by hour: net sales by the local hour (location time zone) at which the check opened;
* by revenue center: net sales by the check's revenue center.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from tasks.tracker import TaskHandle

from ..models import DailySalesSummary
from ..sources import sales_source
from .locations import MalformedData, each_location
from .numbers import finite_decimal

CENT = Decimal("0.01")
MONEY_FIELDS = (
    "gross_sales",
    "net_sales",
    "discounts",
    "voids",
    "refunds",
    "tax",
    "tips",
    "service_charges",
)


def _number(value: Any, where: str) -> Decimal:
    result = finite_decimal(value)
    if result is None:
        raise MalformedData(f"{where}: not a number ({value!r})")
    return result


def _list(check: dict, key: str, where: str) -> list:
    value = check.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedData(f"{where}: '{key}' is not a list")
    return value


def _amounts(check: dict, key: str, where: str) -> Decimal:
    total = Decimal(0)
    for n, entry in enumerate(_list(check, key, where)):
        if not isinstance(entry, dict):
            raise MalformedData(f"{where}: {key}[{n}] is not an object")
        total += _number(entry.get("amount"), f"{where} {key}[{n}].amount")
    return total


def summarise_checks(checks: list[Any], *, business_date: date, tz: ZoneInfo) -> dict[str, Any]:
    """The summary of one location-day; MalformedData on the first unreadable check."""
    sums = {name: Decimal(0) for name in MONEY_FIELDS}
    guests = count = voided = 0
    by_hour: dict[str, Decimal] = defaultdict(Decimal)
    by_center: dict[str, Decimal] = defaultdict(Decimal)
    for index, check in enumerate(checks):
        if not isinstance(check, dict):
            raise MalformedData(f"check #{index}: not an object")
        where = f"check {check.get('check_id') or '#' + str(index)}"
        if check.get("business_date") not in (None, business_date.isoformat()):
            raise MalformedData(
                f"{where}: business_date {check.get('business_date')!r} "
                f"is not {business_date.isoformat()}"
            )
        items = _list(check, "items", where)
        live = void = Decimal(0)
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                raise MalformedData(f"{where}: items[{n}] is not an object")
            amount = _number(item.get("qty"), f"{where} items[{n}].qty") * _number(
                item.get("unit_price"), f"{where} items[{n}].unit_price"
            )
            if item.get("voided"):
                void += amount
            else:
                live += amount
        if check.get("status") == "voided":
            sums["voids"] += live + void
            voided += 1
            continue
        try:
            opened = datetime.fromisoformat(str(check.get("opened_at")))
        except ValueError as exc:
            raise MalformedData(
                f"{where}: opened_at {check.get('opened_at')!r} is not a timestamp"
            ) from exc
        if opened.tzinfo is None:
            opened = opened.replace(tzinfo=tz)
        center = check.get("revenue_center")
        if not isinstance(center, str) or not center:
            raise MalformedData(f"{where}: revenue_center missing")
        guest_count = check.get("guest_count", 0)
        if isinstance(guest_count, bool) or not isinstance(guest_count, int) or guest_count < 0:
            raise MalformedData(f"{where}: guest_count {guest_count!r} is not a count")
        discounts = _amounts(check, "discounts", where)
        refunds = _amounts(check, "refunds", where)
        net = live - discounts - refunds
        sums["gross_sales"] += live
        sums["voids"] += void
        sums["discounts"] += discounts
        sums["refunds"] += refunds
        sums["net_sales"] += net
        sums["service_charges"] += _amounts(check, "service_charges", where)
        sums["tax"] += _number(check.get("tax", 0), f"{where} tax")
        sums["tips"] += _number(check.get("tip", 0), f"{where} tip")
        guests += guest_count
        count += 1
        by_hour[f"{opened.astimezone(tz).hour:02d}"] += net
        by_center[center] += net
    summary: dict[str, Any] = {k: v.quantize(CENT, ROUND_HALF_UP) for k, v in sums.items()}
    summary.update(
        guest_count=guests,
        check_count=count,
        voided_check_count=voided,
        average_check=(sums["net_sales"] / count).quantize(CENT, ROUND_HALF_UP)
        if count
        else Decimal("0.00"),
        net_sales_by_hour={
            h: str(v.quantize(CENT, ROUND_HALF_UP)) for h, v in sorted(by_hour.items())
        },
        net_sales_by_revenue_center={
            c: str(v.quantize(CENT, ROUND_HALF_UP)) for c, v in sorted(by_center.items())
        },
    )
    return summary


def save_summary(business_date: date, location: dict, summary: dict, task_id: str) -> None:
    """Insert or replace in one statement: re-runs (even concurrent ones) never duplicate."""
    row = DailySalesSummary(
        business_date=business_date,
        location_id=location["id"],
        location_name=location.get("name", ""),
        task_id=task_id,
        computed_at=timezone.now(),
        **summary,
    )
    update = [*summary.keys(), "location_name", "task_id", "computed_at"]
    with transaction.atomic():
        DailySalesSummary.objects.bulk_create(
            [row],
            update_conflicts=True,
            unique_fields=["business_date", "location_id"],
            update_fields=update,
        )


def run(task: TaskHandle, params: dict[str, Any]) -> dict[str, Any]:
    """Summarise every requested location; a bad location is an error, not the end."""
    source = sales_source()

    def summarise(business_date: date, location: dict, tz: ZoneInfo) -> dict[str, Any]:
        checks = source.fetch_checks(business_date, str(location["id"]))
        summary = summarise_checks(checks, business_date=business_date, tz=tz)
        save_summary(business_date, location, summary, task.task_id)
        return {"net_sales": str(summary["net_sales"]), "check_count": summary["check_count"]}

    done, failed = each_location(task, source, params, summarise, data="sales", verb="summarised")
    net = sum((Decimal(v["net_sales"]) for v in done.values()), Decimal(0))
    return {
        "business_date": params["business_date"].isoformat(),
        "locations": len(done) + len(failed),
        "summarised": sorted(done),
        "failed_locations": failed,
        "net_sales": str(net),
        "check_count": sum(v["check_count"] for v in done.values()),
    }
