"""get_mpvs on the sample timeclock: figures checked against an independent computation."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from operations import registry
from operations.jobs.mpvs import MalformedData, check_shift
from operations.models import MealPeriodViolation
from tests.support.jobs import run_job
from tests.support.source_server import SAMPLE, source_server

pytestmark = pytest.mark.django_db(transaction=True)
DAY = date(2025, 6, 6)
DAYS = [date(2025, 6, 2) + timedelta(days=n) for n in range(14)]
LOCATIONS = [f"L{n:02d}" for n in range(1, 13)]
BAD = {  # documented in sample_data/README.md
    (date(2025, 6, 5), "L08"): "not valid JSON",
    (date(2025, 6, 9), "L10"): "shift L10-20250609-011 clock_out: '2025-06-09T218:28:00-07:00'",
    (date(2025, 6, 14), "L04"): "missing data",
}


def minutes(a: str, b: str) -> int:
    return int((datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds() // 60)


def expected_shift(shift: dict) -> tuple[str, str]:
    """The rule again, in whole minutes: (first meal violation, second meal violation)."""
    meals = sorted((b["start"], b["end"]) for b in shift["breaks"] if b["kind"] == "meal")
    lengths = [minutes(s, e) for s, e in meals]
    worked = minutes(shift["clock_in"], shift["clock_out"]) - sum(lengths)

    def verdict(n: int, due: int, name: str) -> str:
        if len(meals) <= n:
            return f"missing_{name}_meal"
        if minutes(shift["clock_in"], meals[n][0]) - sum(lengths[:n]) > due:
            return f"late_{name}_meal"
        return f"short_{name}_meal" if lengths[n] < 30 else ""

    first = second = ""
    if worked > 300 and not (shift["first_meal_waiver"] and worked <= 360):
        first = verdict(0, 300, "first")
    if worked > 600 and not (
        shift["second_meal_waiver"] and worked <= 720 and not shift["first_meal_waiver"]
    ):
        second = verdict(1, 600, "second")
    return first, second


def expected(day: date, location: str) -> dict:
    """Violations of one location-day from the raw file; premiums in integer cents."""
    raw = json.loads((SAMPLE / "timeclock" / day.isoformat() / f"{location}.json").read_text())
    rows = {}
    kinds: Counter = Counter()
    for shift in raw["shifts"]:
        first, second = expected_shift(shift)
        kinds.update(k for k in (first, second) if k)
        hours = bool(first) + bool(second)
        if hours:
            rows[shift["shift_id"]] = (
                first,
                second,
                hours,
                round(shift["hourly_rate"] * 100) * hours,
            )
    return {
        "shifts": len(raw["shifts"]),
        "rows": rows,
        "kinds": kinds,
        "hours": sum(r[2] for r in rows.values()),
        "cents": sum(r[3] for r in rows.values()),
    }


def cents(value) -> int:
    return round(float(value) * 100)


def stored(day: date, location: str) -> dict:
    return {
        r.shift_id: (r.first_meal, r.second_meal, r.premium_hours, cents(r.premium_pay))
        for r in MealPeriodViolation.objects.filter(business_date=day, location_id=location)
    }


def test_violations_match_the_raw_punches(sample_sources):
    task = run_job("get_mpvs", {"business_date": DAY.isoformat()})
    assert task.status == "completed", task.error
    assert task.progress == {"current": 12, "total": 12, "message": task.progress_message}
    exp = {loc: expected(DAY, loc) for loc in LOCATIONS}
    for loc in LOCATIONS:
        assert stored(DAY, loc) == exp[loc]["rows"], loc
    kinds = sum((e["kinds"] for e in exp.values()), Counter())
    assert {k: v for k, v in task.result["violations"].items() if v} == dict(kinds)
    assert task.result["shifts_checked"] == sum(e["shifts"] for e in exp.values())
    assert task.result["premium_hours"] == sum(e["hours"] for e in exp.values())
    assert cents(task.result["premium_pay"]) == sum(e["cents"] for e in exp.values())
    assert task.result["failed_locations"] == {}
    assert kinds["late_first_meal"] and kinds["short_first_meal"]
    assert kinds["missing_first_meal"]


def test_whole_sample_totals_and_bad_records(sample_sources):
    """Every date of the sample: totals match, and exactly the documented records fail."""
    shifts = hours = pay = 0
    kinds: Counter = Counter()
    for day in DAYS:
        task = run_job("get_mpvs", {"business_date": day.isoformat()})
        bad = {loc: why for (d, loc), why in BAD.items() if d == day}
        assert task.status == ("completed_with_errors" if bad else "completed"), task.error
        assert list(task.result["failed_locations"]) == list(bad)
        for loc, why in bad.items():
            assert why in task.result["failed_locations"][loc]
            assert f"location {loc}" in task.error
        assert task.result["checked"] == [loc for loc in LOCATIONS if loc not in bad]
        shifts += task.result["shifts_checked"]
        hours += task.result["premium_hours"]
        pay += cents(task.result["premium_pay"])
        kinds.update({k: v for k, v in task.result["violations"].items() if v})
    exp = [expected(d, loc) for d in DAYS for loc in LOCATIONS if (d, loc) not in BAD]
    assert shifts == sum(e["shifts"] for e in exp)
    assert kinds == sum((e["kinds"] for e in exp), Counter())
    assert len(kinds) == 6  # every kind occurs in the sample
    assert hours == sum(e["hours"] for e in exp)
    assert pay == sum(e["cents"] for e in exp)
    assert MealPeriodViolation.objects.count() == sum(len(e["rows"]) for e in exp)


def test_rerun_replaces_and_never_duplicates(sample_sources):
    params = {"business_date": DAY.isoformat(), "locations": ["L02"]}
    run_job("get_mpvs", params)
    first = stored(DAY, "L02")
    assert first
    MealPeriodViolation.objects.filter(location_id="L02").update(premium_hours=9)
    row = MealPeriodViolation.objects.filter(location_id="L02").first()
    MealPeriodViolation.objects.create(  # a shift that no longer violates (corrected punches)
        business_date=DAY,
        location_id="L02",
        employee_id=row.employee_id,
        shift_id="gone",
        clock_in=row.clock_in,
        clock_out=row.clock_out,
        hours_worked=row.hours_worked,
        first_meal="late_first_meal",
        hourly_rate=row.hourly_rate,
        premium_hours=1,
        premium_pay=row.hourly_rate,
    )
    second = run_job("get_mpvs", params)
    assert second.status == "completed"
    assert stored(DAY, "L02") == first == expected(DAY, "L02")["rows"]
    assert set(MealPeriodViolation.objects.values_list("task_id", flat=True)) == {
        str(second.task_id)
    }


def test_date_without_any_data_fails_clearly(sample_sources):
    task = run_job("get_mpvs", {"business_date": "2025-01-01"})
    assert task.status == "failed"
    assert task.error == "no timeclock data for 2025-01-01"


def test_bad_parameters_are_refused_before_launch(sample_sources):
    future = (timezone.localdate() + timedelta(days=2)).isoformat()
    for params, field in (
        ({"business_date": future}, "business_date"),
        ({"business_date": "yesterday"}, "business_date"),
        ({"locations": ["L01", "NOPE"]}, "locations"),
        ({"bogus": 1}, "bogus"),
    ):
        with pytest.raises(ValidationError) as info:
            registry.validate_params("get_mpvs", params)
        assert field in info.value.detail
    clean = registry.validate_params("get_mpvs", {})
    assert clean == {
        "business_date": (timezone.localdate() - timedelta(days=1)).isoformat(),
        "locations": [],
    }


def test_bad_parameters_are_400_over_the_api(client, runner, sample_sources):
    client.force_login(runner)
    for params in (
        {"business_date": "not-a-date"},
        {"business_date": "2999-01-01"},
        {"locations": ["NOPE"]},
    ):
        response = client.post(
            "/task-status",
            {"operation": "get_mpvs", "params": params},
            content_type="application/json",
        )
        assert response.status_code == 400, response.content
        assert next(iter(params)) in json.dumps(response.json())


def test_over_http_source_equals_file_source(settings, sample_sources):
    with source_server() as server:
        settings.TIMECLOCK_SOURCE_URL = f"{server.base}/timeclock"
        settings.SOURCE_TOKEN = "test-token"
        settings.SOURCE_BACKOFF_SECONDS = 0.01
        settings.SOURCE_PAGE_SIZE = 7  # several pages a location
        server.fail("L04", "500")
        task = run_job("get_mpvs", {"business_date": DAY.isoformat(), "locations": ["L04", "L05"]})
        bad = run_job("get_mpvs", {"business_date": "2025-06-05", "locations": ["L07", "L08"]})
        gone = run_job("get_mpvs", {"business_date": "2025-06-14", "locations": ["L04"]})
    assert task.status == "completed", task.error
    for location in ("L04", "L05"):
        assert stored(DAY, location) == expected(DAY, location)["rows"]
    assert bad.status == "completed_with_errors"
    assert list(bad.result["failed_locations"]) == ["L08"]
    assert "malformed" in bad.result["failed_locations"]["L08"]
    assert gone.status == "failed" and gone.error == "no timeclock data for 2025-06-14 at L04"


def test_unreachable_source_fails_with_a_clear_message(settings, sample_sources):
    settings.TIMECLOCK_SOURCE_URL = "http://127.0.0.1:9/timeclock"
    settings.SOURCE_MAX_RETRIES = 1
    settings.SOURCE_BACKOFF_SECONDS = 0.01
    task = run_job("get_mpvs", {"business_date": DAY.isoformat()})
    assert task.status == "failed"
    assert task.error.startswith("timeclock source unusable:") and "unreachable" in task.error


def test_violations_are_browsable_read_only_in_the_admin(client, django_user_model, sample_sources):
    run_job("get_mpvs", {"business_date": DAY.isoformat(), "locations": ["L01"]})
    row = MealPeriodViolation.objects.filter(location_id="L01").first()
    django_user_model.objects.create_user("boss", password="pw", is_staff=True, is_superuser=True)
    client.login(username="boss", password="pw")
    page = client.get("/admin/operations/mealperiodviolation/")
    assert page.status_code == 200 and row.shift_id in page.content.decode()
    assert client.get("/admin/operations/mealperiodviolation/add/").status_code == 403
    change = client.get(f"/admin/operations/mealperiodviolation/{row.pk}/change/")
    assert change.status_code == 200 and 'name="premium_pay"' not in change.content.decode()


def _shift(
    worked_h: float, meals: list[tuple[float, int]] = (), *, first_waiver=False, second_waiver=False
) -> dict:
    """A shift clocking in at 08:00; meals as (worked hours at start, minutes)."""
    start = datetime.fromisoformat("2025-06-06T08:00:00-07:00")
    breaks, unpaid = [], 0
    for at, length in meals:
        begin = start + timedelta(hours=at, minutes=unpaid)
        breaks.append(
            {
                "kind": "meal",
                "start": begin.isoformat(),
                "end": (begin + timedelta(minutes=length)).isoformat(),
            }
        )
        unpaid += length
    out = start + timedelta(hours=worked_h, minutes=unpaid)
    return {
        "shift_id": "S1",
        "employee_id": "E1",
        "hourly_rate": 18.5,
        "clock_in": start.isoformat(),
        "clock_out": out.isoformat(),
        "breaks": breaks,
        "first_meal_waiver": first_waiver,
        "second_meal_waiver": second_waiver,
    }


@pytest.mark.parametrize(
    ("shift", "first", "second"),
    [
        (_shift(5), "", ""),  # exactly 5 h: no meal due
        (_shift(5.5), "missing_first_meal", ""),
        (_shift(5.5, first_waiver=True), "", ""),  # valid waiver (<= 6 h)
        (_shift(6.5, first_waiver=True), "missing_first_meal", ""),  # waiver void over 6 h
        (_shift(8, [(5, 30)]), "", ""),  # starts at 5:00: on time
        (_shift(8, [(5 + 1 / 60, 30)]), "late_first_meal", ""),
        (_shift(8, [(4, 29)]), "short_first_meal", ""),
        (_shift(8, [(5.5, 20)]), "late_first_meal", ""),  # late wins over short
        (_shift(11, [(4, 30)]), "", "missing_second_meal"),
        (_shift(11, [(4, 30)], second_waiver=True), "", ""),  # valid second waiver
        (_shift(12.5, [(4, 30)], second_waiver=True), "", "missing_second_meal"),
        (_shift(11, [(4, 30), (10.5, 30)]), "", "late_second_meal"),
        (_shift(11, [(4, 30), (9, 15)]), "", "short_second_meal"),
        (
            _shift(11, [(6, 10)], first_waiver=True, second_waiver=True),
            "late_first_meal",
            "missing_second_meal",
        ),  # first waiver voids the second
    ],
)
def test_the_rule_on_its_edges(shift, first, second):
    result = check_shift(shift, 0, business_date=DAY, tz=ZoneInfo("America/Los_Angeles"))
    assert (result.first_meal, result.second_meal) == (first, second)
    assert expected_shift(shift) == (first, second)  # the test's own rule agrees
    assert result.premium_pay == result.hourly_rate * (bool(first) + bool(second))


@pytest.mark.parametrize(
    ("key", "length"), [("employee_id", 65), ("shift_id", 65), ("employee_name", 201)]
)
def test_a_value_longer_than_its_column_is_a_malformed_shift(key, length):
    """Refused as the shift is read, not by PostgreSQL when the location-day is saved."""
    shift = {**_shift(8, [(5, 30)]), key: "x" * length}
    with pytest.raises(MalformedData, match=f"{key} longer than"):
        check_shift(shift, 0, business_date=DAY, tz=ZoneInfo("America/Los_Angeles"))
