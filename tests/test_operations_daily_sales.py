"""daily_sales on the sample data: figures checked against an independent computation."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from operations import registry
from operations.models import DailySalesSummary
from tests.support.jobs import run_job
from tests.support.source_server import SAMPLE, source_server

pytestmark = pytest.mark.django_db(transaction=True)
DAY = date(2025, 6, 6)


def cents(value) -> int:
    return round(float(value) * 100)


def expected(day: date, location: str) -> dict:
    """The summary computed straight from the raw export, in integer cents."""
    zones = {
        loc["id"]: loc["timezone"]
        for loc in json.loads((SAMPLE / "sales" / "locations.json").read_text())["locations"]
    }
    raw = gzip.decompress((SAMPLE / "sales" / day.isoformat() / f"{location}.json.gz").read_bytes())
    out = defaultdict(int)
    hours: dict[str, int] = defaultdict(int)
    centers: dict[str, int] = defaultdict(int)
    for check in json.loads(raw)["checks"]:
        items = [(cents(i["unit_price"]) * i["qty"], bool(i.get("voided"))) for i in check["items"]]
        if check["status"] == "voided":
            out["voids"] += sum(a for a, _ in items)
            continue
        gross = sum(a for a, v in items if not v)
        disc = sum(cents(d["amount"]) for d in check["discounts"])
        ref = sum(cents(r["amount"]) for r in check["refunds"])
        out["gross_sales"] += gross
        out["voids"] += sum(a for a, v in items if v)
        out["discounts"] += disc
        out["refunds"] += ref
        out["net_sales"] += gross - disc - ref
        out["tax"] += cents(check["tax"])
        out["tips"] += cents(check["tip"])
        out["service_charges"] += sum(cents(s["amount"]) for s in check["service_charges"])
        out["guest_count"] += check["guest_count"]
        out["check_count"] += 1
        hour = datetime.fromisoformat(check["opened_at"]).astimezone(ZoneInfo(zones[location])).hour
        hours[f"{hour:02d}"] += gross - disc - ref
        centers[check["revenue_center"]] += gross - disc - ref
    out["hours"] = dict(hours)
    out["centers"] = dict(centers)
    return dict(out)


def assert_summary_matches(row: DailySalesSummary, exp: dict) -> None:
    for field in (
        "gross_sales",
        "net_sales",
        "discounts",
        "voids",
        "refunds",
        "tax",
        "tips",
        "service_charges",
    ):
        assert cents(getattr(row, field)) == exp[field], field
    assert row.guest_count == exp["guest_count"]
    assert row.check_count == exp["check_count"]
    assert abs(cents(row.average_check) - exp["net_sales"] / exp["check_count"]) <= 0.5
    assert {h: cents(v) for h, v in row.net_sales_by_hour.items()} == exp["hours"]
    assert {c: cents(v) for c, v in row.net_sales_by_revenue_center.items()} == exp["centers"]


def test_daily_sales_figures_match_the_raw_checks(sample_sources):
    task = run_job("daily_sales", {"business_date": DAY.isoformat()})
    assert task.status == "completed", task.error
    assert task.progress == {"current": 12, "total": 12, "message": task.progress_message}
    rows = {r.location_id: r for r in DailySalesSummary.objects.filter(business_date=DAY)}
    assert len(rows) == 12
    for location, row in rows.items():
        assert_summary_matches(row, expected(DAY, location))
    total = sum(expected(DAY, loc)["net_sales"] for loc in rows)
    assert cents(task.result["net_sales"]) == total


def test_rerun_replaces_and_never_duplicates(sample_sources):
    run_job("daily_sales", {"business_date": DAY.isoformat(), "locations": ["L02"]})
    DailySalesSummary.objects.filter(location_id="L02").update(net_sales=Decimal("1.00"))
    second = run_job("daily_sales", {"business_date": DAY.isoformat(), "locations": ["L02"]})
    assert second.status == "completed"
    rows = DailySalesSummary.objects.filter(business_date=DAY, location_id="L02")
    assert rows.count() == 1
    assert cents(rows.get().net_sales) == expected(DAY, "L02")["net_sales"]


@pytest.mark.parametrize(
    ("day", "location", "reason"),
    [
        (date(2025, 6, 10), "L07", "corrupt"),
        (date(2025, 6, 12), "L03", "items[0].qty: not a number ('two')"),
        (date(2025, 6, 13), "L11", "missing data"),
    ],
)
def test_bad_location_is_an_error_and_the_job_goes_on(sample_sources, day, location, reason):
    task = run_job("daily_sales", {"business_date": day.isoformat()})
    assert task.status == "completed_with_errors"
    assert list(task.result["failed_locations"]) == [location]
    assert reason in task.result["failed_locations"][location]
    assert f"location {location}" in task.error
    assert DailySalesSummary.objects.filter(business_date=day).count() == 11


def test_date_without_any_data_fails_clearly(sample_sources):
    task = run_job("daily_sales", {"business_date": "2025-01-01"})
    assert task.status == "failed"
    assert task.error == "no sales data for 2025-01-01"


def test_bad_parameters_are_refused_before_launch(sample_sources):
    future = (timezone.localdate() + timedelta(days=2)).isoformat()
    for params, field in (
        ({"business_date": future}, "business_date"),
        ({"business_date": "yesterday"}, "business_date"),
        ({"locations": ["L01", "NOPE"]}, "locations"),
        ({"bogus": 1}, "bogus"),
    ):
        with pytest.raises(ValidationError) as info:
            registry.validate_params("daily_sales", params)
        assert field in info.value.detail
    with pytest.raises(ValidationError, match="unknown operation"):
        registry.validate_params("nope", {})


def test_default_business_date_is_yesterday_in_time_zone(sample_sources):
    clean = registry.validate_params("daily_sales", {})
    assert clean == {
        "business_date": (timezone.localdate() - timedelta(days=1)).isoformat(),
        "locations": [],
    }


def test_cancel_stops_the_job_and_names_who(sample_sources):
    from operations import runner
    from tasks import tracker
    from tasks.selectors import get_task

    clean = registry.validate_params("daily_sales", {"business_date": DAY.isoformat()})
    handle = tracker.create_task("daily_sales", params=clean)
    tracker.request_cancel(handle.task_id, by="alice")
    assert runner.run_task("daily_sales", handle.task_id, clean) == "cancelled"
    task = get_task(handle.task_id)
    assert task.status == "failed" and "alice" in task.error
    assert not DailySalesSummary.objects.exists()


def test_daily_sales_over_http_source_equals_file_source(settings, sample_sources):
    with source_server() as server:
        settings.SALES_SOURCE_URL = f"{server.base}/sales"
        settings.SOURCE_TOKEN = "test-token"
        settings.SOURCE_BACKOFF_SECONDS = 0.01
        server.fail("L04", "500")
        server.fail("L05", "429:0.1")
        task = run_job(
            "daily_sales", {"business_date": DAY.isoformat(), "locations": ["L04", "L05"]}
        )
    assert task.status == "completed", task.error
    for location in ("L04", "L05"):
        row = DailySalesSummary.objects.get(business_date=DAY, location_id=location)
        assert_summary_matches(row, expected(DAY, location))


def test_unreachable_source_fails_with_a_clear_message(settings, sample_sources):
    settings.SALES_SOURCE_URL = "http://127.0.0.1:9/sales"
    settings.SOURCE_MAX_RETRIES = 1
    settings.SOURCE_BACKOFF_SECONDS = 0.01
    task = run_job("daily_sales", {"business_date": DAY.isoformat()})
    assert task.status == "failed"
    assert task.error.startswith("sales source unusable:") and "unreachable" in task.error
