"""transform_tips on the sample data: every pool checked against the raw files."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from operations.jobs.tips import distribute
from operations.models import TipPool, TipShare
from tests.support.jobs import run_job
from tests.support.source_server import SAMPLE, source_server
from tests.support.watch import launch_and_watch

pytestmark = pytest.mark.django_db(transaction=True)
START, END = date(2025, 6, 2), date(2025, 6, 15)
WEEK1 = {"period_start": "2025-06-02", "period_end": "2025-06-08"}
DAYS = [START + timedelta(days=n) for n in range((END - START).days + 1)]
LOCATIONS = [f"L{n:02d}" for n in range(1, 13)]
BAD = {  # sample_data/README.md: the deliberately bad sales and timeclock files
    (date(2025, 6, 10), "L07"): "malformed data",  # truncated gzip
    (date(2025, 6, 12), "L03"): "malformed data",  # item quantity "two"
    (date(2025, 6, 13), "L11"): "missing data",
    (date(2025, 6, 5), "L08"): "malformed data",  # truncated timeclock JSON
    (date(2025, 6, 9), "L10"): "malformed data",  # clock-out 218:28
    (date(2025, 6, 14), "L04"): "missing data",
}
POLICIES = json.loads((SAMPLE / "tips" / "policies.json").read_text())["policies"]


# --- The rule again, from the raw files, in integer cents and minutes ---------------


def cents(value) -> int:
    return int(Decimal(str(value)) * 100)


def raw_card_cents(day: date, loc: str) -> int:
    raw = gzip.decompress((SAMPLE / "sales" / day.isoformat() / f"{loc}.json.gz").read_bytes())
    return sum(
        cents(p["tip"])
        for check in json.loads(raw)["checks"]
        if check["status"] == "closed"
        for p in check["payments"]
        if p["type"] != "cash"
    )


def raw_cash_cents(day: date, loc: str) -> int:
    raw = json.loads((SAMPLE / "sales" / day.isoformat() / f"{loc}.cash-tips.json").read_text())
    return sum(cents(d["amount"]) for d in raw["declarations"])


def raw_weights(day: date, loc: str) -> dict[str, tuple[int, int]]:
    """employee -> (minutes worked, weight in minutes x points x 100) for jobs that share."""
    raw = json.loads((SAMPLE / "timeclock" / day.isoformat() / f"{loc}.json").read_text())
    points = POLICIES[loc]["jobs"]
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for shift in raw["shifts"]:
        if shift["job"] not in points:
            continue
        span = datetime.fromisoformat(shift["clock_out"]) - datetime.fromisoformat(
            shift["clock_in"]
        )
        meals = sum(
            (
                datetime.fromisoformat(b["end"]) - datetime.fromisoformat(b["start"])
                for b in shift["breaks"]
                if b["kind"] == "meal"
            ),
            timedelta(),
        )
        minutes = int((span - meals).total_seconds()) // 60
        out[shift["employee_id"]][0] += minutes
        out[shift["employee_id"]][1] += minutes * cents(points[shift["job"]])
    return {e: (m, w) for e, (m, w) in out.items() if m}


def largest_remainder(pool: int, weights: dict[str, int]) -> dict[str, int]:
    total = sum(weights.values())
    shares = {e: pool * w // total for e, w in weights.items()}
    order = sorted(weights, key=lambda e: (-(pool * weights[e] % total), -weights[e], e))
    for e in order[: pool - sum(shares.values())]:
        shares[e] += 1
    return shares


def stored_shares(day: date, loc: str) -> dict[str, tuple[int, int, int]]:
    return {
        s.employee_id: (round(s.hours * 60), cents(s.card_tips), cents(s.cash_tips))
        for s in TipShare.objects.filter(business_date=day, location_id=loc)
    }


# --- Tests -------------------------------------------------------------------------------


def test_every_pool_of_both_weeks_is_paid_out_to_the_cent(tip_sources):
    task = run_job(
        "transform_tips", {"period_start": START.isoformat(), "period_end": END.isoformat()}
    )
    assert task.status == "completed_with_errors", task.error
    assert task.result["failed_locations"] == {"L09": "no tip policy"}
    assert task.error_count == 1 + len(BAD)
    assert task.progress == {"current": 12, "total": 12, "message": task.progress_message}
    checked = 0
    for loc in LOCATIONS:
        if loc == "L09":
            assert not TipShare.objects.filter(location_id=loc).exists()
            assert loc not in task.result["locations"]
            continue
        figures = task.result["locations"][loc]
        bad = {d.isoformat(): why for (d, bad_loc), why in BAD.items() if bad_loc == loc}
        assert set(figures["failed_days"]) == set(bad), loc
        for day_iso, why in bad.items():
            assert figures["failed_days"][day_iso].startswith(why)
        card_sum = cash_sum = 0
        for day in DAYS:
            if day.isoformat() in bad:
                assert not TipPool.objects.filter(business_date=day, location_id=loc).exists()
                assert not TipShare.objects.filter(business_date=day, location_id=loc).exists()
                continue
            pool = TipPool.objects.get(business_date=day, location_id=loc)
            card, cash = raw_card_cents(day, loc), raw_cash_cents(day, loc)
            assert (cents(pool.card_tips), cents(pool.cash_tips)) == (card, cash), (loc, day)
            shares = stored_shares(day, loc)
            assert sum(s[1] for s in shares.values()) == card, (loc, day)
            assert sum(s[2] for s in shares.values()) == cash, (loc, day)
            weights = raw_weights(day, loc)
            expected_card = largest_remainder(card, {e: w for e, (_, w) in weights.items()})
            expected_cash = largest_remainder(cash, {e: w for e, (_, w) in weights.items()})
            assert shares == {
                e: (weights[e][0], expected_card[e], expected_cash[e]) for e in weights
            }, (loc, day)
            card_sum += card
            cash_sum += cash
            checked += 1
        assert figures["days"] == 14 - len(bad)
        assert (cents(figures["card_tips"]), cents(figures["cash_tips"])) == (card_sum, cash_sum)
        assert cents(figures["total"]) == card_sum + cash_sum
    assert checked == 11 * 14 - len(BAD)
    totals = task.result["totals"]
    assert cents(totals["total"]) == cents(totals["card_tips"]) + cents(totals["cash_tips"])
    assert cents(totals["card_tips"]) == sum(cents(p.card_tips) for p in TipPool.objects.all())
    assert task.result["payroll_file"] == "payroll/tips-2025-06-02-2025-06-15.csv"
    text = json.dumps(task.result)
    assert "-E0" not in text, "no per-employee data in the result"
    assert "Shift Lead" not in set(TipShare.objects.values_list("job", flat=True))


@pytest.mark.parametrize(("day", "loc"), sorted(BAD))
def test_each_bad_sample_file_is_an_error_naming_location_and_day(tip_sources, day, loc):
    params = {
        "period_start": (day - timedelta(days=1)).isoformat(),
        "period_end": day.isoformat(),
        "locations": [loc],
    }
    task = run_job("transform_tips", params)
    assert task.status == "completed_with_errors"
    assert task.error.startswith(f"location {loc}, {day.isoformat()}: {BAD[(day, loc)]}")
    assert task.result["locations"][loc]["days"] == 1
    assert TipPool.objects.filter(location_id=loc).count() == 1


def test_week_one_figures_and_payroll_file(tip_sources):
    task = run_job("transform_tips", WEEK1)
    assert task.status == "completed_with_errors"  # L09 (no policy), L08 on 2025-06-05
    assert set(task.result["failed_locations"]) == {"L09"}
    for loc, figures in task.result["locations"].items():
        days = [d for d in DAYS[:7] if (d, loc) not in BAD]
        assert cents(figures["card_tips"]) == sum(raw_card_cents(d, loc) for d in days)
        assert cents(figures["cash_tips"]) == sum(raw_cash_cents(d, loc) for d in days)
    path = tip_sources / "payroll" / "tips-2025-06-02-2025-06-08.csv"
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert rows[0] == [
        "employee_id",
        "employee_name",
        "location_id",
        "pay_period",
        "hours",
        "card_tips",
        "cash_tips",
        "total",
    ]
    body = rows[1:]
    assert [(r[2], r[0]) for r in body] == sorted((r[2], r[0]) for r in body)
    assert len(body) == TipShare.objects.values("location_id", "employee_id").distinct().count()
    assert {r[3] for r in body} == {"2025-06-02..2025-06-08"}
    for row in body:
        shares = TipShare.objects.filter(employee_id=row[0], location_id=row[2])
        assert Decimal(row[4]) == sum(s.hours for s in shares)
        assert Decimal(row[5]) == sum(s.card_tips for s in shares)
        assert Decimal(row[6]) == sum(s.cash_tips for s in shares)
        assert Decimal(row[7]) == Decimal(row[5]) + Decimal(row[6])
        assert row[1] == shares.first().employee_name
    total = sum(Decimal(r[7]) for r in body)
    assert total == Decimal(task.result["totals"]["total"])


def test_rerun_replaces_the_range_and_never_duplicates(tip_sources):
    params = {**WEEK1, "locations": ["L01", "L02"]}
    first = run_job("transform_tips", params)
    assert first.status == "completed"
    before = {
        (s.business_date, s.location_id, s.employee_id): (s.hours, s.card_tips, s.cash_tips)
        for s in TipShare.objects.all()
    }
    pools = TipPool.objects.count()
    assert pools == 14 and len(before) > 100
    TipShare.objects.filter(location_id="L01").update(card_tips=Decimal("999.99"))
    TipShare.objects.create(
        business_date=date(2025, 6, 3),
        location_id="L02",
        employee_id="L02-E999",
        hours=1,
        points=1,
        card_tips=5,
        cash_tips=0,
    )  # a share that no longer exists in the source
    kept = TipShare.objects.create(
        business_date=date(2025, 6, 9),
        location_id="L01",
        employee_id="L01-E001",
        hours=1,
        points=1,
        card_tips=1,
        cash_tips=0,
    )  # outside the range: not touched
    second = run_job("transform_tips", params)
    assert second.status == "completed"
    after = {
        (s.business_date, s.location_id, s.employee_id): (s.hours, s.card_tips, s.cash_tips)
        for s in TipShare.objects.exclude(pk=kept.pk)
    }
    assert after == before
    assert TipPool.objects.count() == pools
    assert set(TipShare.objects.exclude(pk=kept.pk).values_list("task_id", flat=True)) == {
        str(second.task_id)
    }
    assert second.result == first.result


def test_payroll_file_keeps_other_locations_when_one_is_rerun(tip_sources):
    run_job("transform_tips", {**WEEK1, "locations": ["L01", "L02"]})
    run_job("transform_tips", {**WEEK1, "locations": ["L02"]})
    text = (tip_sources / "payroll" / "tips-2025-06-02-2025-06-08.csv").read_text()
    assert ",L01," in text and ",L02," in text


def test_distribution_ties_go_to_the_larger_weight_then_the_smaller_id():
    assert distribute(Decimal("0.01"), {"L01-E002": 1, "L01-E001": 1}) == {
        "L01-E002": Decimal("0.00"),
        "L01-E001": Decimal("0.01"),
    }
    assert distribute(Decimal("1.00"), {"c": 1, "b": 1, "a": 1}) == {
        "a": Decimal("0.34"),
        "b": Decimal("0.33"),
        "c": Decimal("0.33"),
    }
    # Remainders 0.5 and 0.5: the larger weight gets the odd cent.
    assert distribute(Decimal("0.02"), {"a": 1, "b": 3}) == {
        "a": Decimal("0.00"),
        "b": Decimal("0.02"),
    }
    assert distribute(Decimal("0.05"), {"a": 2, "b": 2, "c": 0}) == {
        "a": Decimal("0.03"),
        "b": Decimal("0.02"),
        "c": Decimal("0.00"),
    }
    assert distribute(Decimal("0.00"), {"a": 1}) == {"a": Decimal("0.00")}


def test_distribution_always_adds_up_to_the_pool():
    import random

    rng = random.Random(7)
    for _ in range(300):
        weights = {
            f"E{n:03d}": Decimal(rng.randint(0, 900))
            / 60
            * Decimal(rng.choice(["1", "2.5", "10", "12"]))
            for n in range(rng.randint(1, 40))
        }
        weights["E999"] = Decimal(1)
        pool = Decimal(rng.randint(0, 500_000)) / 100
        shares = distribute(pool, weights)
        assert sum(shares.values()) == pool
        exact = {e: pool * w / sum(weights.values()) for e, w in weights.items()}
        assert all(abs(shares[e] - exact[e]) < Decimal("0.01") for e in weights)


def write_policy(tmp_path: Path, **changes: dict) -> Path:
    policies = json.loads((SAMPLE / "tips" / "policies.json").read_text())
    for loc, jobs in changes.items():
        policies["policies"][loc]["jobs"].update(jobs)
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(policies))
    return path


def test_a_policy_that_lets_a_manager_share_is_refused_for_that_location(
    tip_sources, settings, tmp_path
):
    settings.TIP_POLICY_FILE = write_policy(
        tmp_path, L01={"Shift Lead": "2"}, L02={"Floor Manager": "1"}
    )
    day = {"period_start": "2025-06-02", "period_end": "2025-06-02"}
    task = run_job("transform_tips", {**day, "locations": ["L01", "L02", "L03"]})
    assert task.status == "completed_with_errors"
    failed = task.result["failed_locations"]
    assert set(failed) == {"L01", "L02"}
    assert "'Shift Lead'" in failed["L01"] and "Labor Code 351" in failed["L01"]
    assert "'Floor Manager'" in failed["L02"]
    assert list(task.result["locations"]) == ["L03"]
    assert set(TipShare.objects.values_list("location_id", flat=True)) == {"L03"}
    alone = run_job("transform_tips", {**day, "locations": ["L01"]})
    assert alone.status == "failed"
    assert "no location could be transformed" in alone.error and "Shift Lead" in alone.error


def small_source(tmp_path: Path, shifts_by_day: dict[str, list[dict]]) -> Path:
    """A one-location source: one check with a $10.00 card tip and $4.00 cash a day."""
    root = tmp_path / "small"
    for kind in ("sales", "timeclock"):
        (root / kind).mkdir(parents=True)
        shutil.copy(SAMPLE / kind / "locations.json", root / kind / "locations.json")
    for day, shifts in shifts_by_day.items():
        check = {
            "check_id": f"{day}-1",
            "business_date": day,
            "revenue_center": "Bar",
            "opened_at": f"{day}T19:00:00-04:00",
            "guest_count": 1,
            "status": "closed",
            "items": [{"qty": 1, "unit_price": 50.0}],
            "tax": 0,
            "tip": 10.0,
            "payments": [{"type": "credit", "amount": 60.0, "tip": 10.0}],
        }
        for kind, data in (("sales", {"checks": [check]}), ("timeclock", {"shifts": shifts})):
            (root / kind / day).mkdir()
            (root / kind / day / "L01.json").write_text(json.dumps(data))
        (root / "sales" / day / "L01.cash-tips.json").write_text(
            json.dumps({"declarations": [{"employee_id": "L01-E900", "amount": "4.00"}]})
        )
    return root


def shift(day: str, n: int, job: str) -> dict:
    return {
        "shift_id": f"{day}-{n}",
        "employee_id": f"L01-E9{n:02d}",
        "employee_name": f"Test {n}",
        "job": job,
        "hourly_rate": 20,
        "clock_in": f"{day}T16:00:00-04:00",
        "clock_out": f"{day}T22:00:00-04:00",
        "breaks": [
            {"kind": "meal", "start": f"{day}T19:00:00-04:00", "end": f"{day}T19:30:00-04:00"}
        ],
    }


def test_tips_without_eligible_hours_are_an_error_and_the_job_goes_on(settings, tmp_path):
    root = small_source(
        tmp_path,
        {
            "2025-06-02": [
                shift("2025-06-02", 1, "Line Cook"),
                shift("2025-06-02", 2, "Shift Lead"),
            ],
            "2025-06-03": [
                shift("2025-06-03", 1, "Server"),
                shift("2025-06-03", 2, "Busser"),
                shift("2025-06-03", 3, "Shift Lead"),
            ],
        },
    )
    settings.SALES_SOURCE_URL = f"file://{root / 'sales'}"
    settings.TIMECLOCK_SOURCE_URL = f"file://{root / 'timeclock'}"
    settings.ACCOUNTING_TARGET_URL = f"file://{tmp_path / 'accounting'}"
    settings.TIP_POLICY_FILE = SAMPLE / "tips" / "policies.json"
    task = run_job(
        "transform_tips",
        {"period_start": "2025-06-02", "period_end": "2025-06-03", "locations": ["L01"]},
    )
    assert task.status == "completed_with_errors"
    assert task.error == (
        "location L01, 2025-06-02: $14.00 of tips but no eligible hours "
        "(nobody worked in a job of the tip policy)"
    )
    # 5.5 h each; Server 10 points, Busser 5: $10.00 -> 6.67 / 3.33, $4.00 -> 2.67 / 1.33.
    shares = {
        s.employee_id: (s.hours, s.points, s.card_tips, s.cash_tips) for s in TipShare.objects.all()
    }
    assert shares == {
        "L01-E901": (Decimal("5.50"), Decimal("10.00"), Decimal("6.67"), Decimal("2.67")),
        "L01-E902": (Decimal("5.50"), Decimal("5.00"), Decimal("3.33"), Decimal("1.33")),
    }
    assert task.result["locations"]["L01"]["failed_days"] == {
        "2025-06-02": "$14.00 of tips but no eligible hours (nobody worked in a job of the "
        "tip policy)"
    }


def test_a_record_longer_than_our_columns_is_an_error_for_its_day(settings, tmp_path):
    """An employee id, name or job the table cannot hold fails that location-day only; two
    jobs of one day, each fitting, are shortened to fit together."""
    long_job, other_job = "S" * 65, "Long " + "x" * 55
    days = {f"2025-06-0{n}": [shift(f"2025-06-0{n}", 1, "Server")] for n in range(2, 7)}
    days["2025-06-02"][0]["employee_id"] = "L01-" + "E" * 61
    days["2025-06-03"][0]["job"] = long_job
    days["2025-06-04"][0]["employee_name"] = "N" * 201
    morning = {
        **shift("2025-06-05", 1, other_job),
        "shift_id": "2025-06-05-morning",
        "clock_in": "2025-06-05T08:00:00-04:00",
        "clock_out": "2025-06-05T12:00:00-04:00",
        "breaks": [],
    }
    days["2025-06-05"].append(morning)
    root = small_source(tmp_path, days)
    settings.SALES_SOURCE_URL = f"file://{root / 'sales'}"
    settings.TIMECLOCK_SOURCE_URL = f"file://{root / 'timeclock'}"
    settings.ACCOUNTING_TARGET_URL = f"file://{tmp_path / 'accounting'}"
    settings.TIP_POLICY_FILE = write_policy(tmp_path, L01={long_job: "10", other_job: "5"})
    task = run_job(
        "transform_tips",
        {"period_start": "2025-06-02", "period_end": "2025-06-06", "locations": ["L01"]},
    )
    assert task.status == "completed_with_errors", task.error
    failed = task.result["locations"]["L01"]["failed_days"]
    assert set(failed) == {"2025-06-02", "2025-06-03", "2025-06-04"}
    assert all(reason.startswith("malformed data: shift 2025-06-0") for reason in failed.values())
    assert "employee_id longer than 64" in failed["2025-06-02"]
    assert "job longer than 64" in failed["2025-06-03"]
    assert "employee_name longer than 200" in failed["2025-06-04"]
    assert task.result["locations"]["L01"]["days"] == 2
    jobs = dict(TipShare.objects.values_list("business_date", "job"))
    assert jobs[date(2025, 6, 6)] == "Server"
    both = jobs[date(2025, 6, 5)]
    assert len(both) == 64 and both.startswith(f"{other_job} /") and both.endswith("…")


def test_http_sources_and_target_deliver_the_payroll_file(tip_sources, settings):
    """The same period over the source API: the file the server received is the one a
    directory target gets."""
    params = {"period_start": "2025-06-02", "period_end": "2025-06-02", "locations": ["L01"]}
    name = "tips-2025-06-02-2025-06-02.csv"
    by_file = run_job("transform_tips", params)
    assert by_file.status == "completed", by_file.error
    written = (tip_sources / "payroll" / name).read_bytes()
    settings.SOURCE_TOKEN = "test-token"
    with source_server() as server:
        settings.SALES_SOURCE_URL = f"{server.base}/sales"
        settings.TIMECLOCK_SOURCE_URL = f"{server.base}/timeclock"
        settings.ACCOUNTING_TARGET_URL = f"{server.base}/accounting"
        by_http = run_job("transform_tips", params)
    assert by_http.status == "completed", by_http.error
    assert by_http.result["payroll_file"] == f"PAY-{name}"
    assert ("POST", "/accounting/payroll-files") in server.requests
    assert server.files == {name: written}
    rows = list(csv.DictReader(io.StringIO(written.decode())))
    payroll = by_http.result["payroll"]
    assert len(rows) == payroll["rows"] == len(raw_weights(date(2025, 6, 2), "L01"))
    assert sum(Decimal(r["total"]) for r in rows) == Decimal(by_http.result["payroll"]["total"])
    assert by_http.result["payroll"]["total"] == by_http.result["totals"]["total"]


def test_a_target_that_fails_keeps_the_shares(tip_sources, settings, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings.ACCOUNTING_TARGET_URL = f"file://{blocker}"
    task = run_job(
        "transform_tips",
        {"period_start": "2025-06-02", "period_end": "2025-06-02", "locations": ["L01"]},
    )
    assert task.status == "completed_with_errors"
    assert task.result["payroll_file"] is None
    assert task.error.startswith("payroll file tips-2025-06-02-2025-06-02.csv not written")
    assert TipShare.objects.filter(location_id="L01").count() == len(
        raw_weights(date(2025, 6, 2), "L01")
    )


def test_a_period_without_data_fails_clearly(tip_sources):
    task = run_job(
        "transform_tips",
        {"period_start": "2025-01-06", "period_end": "2025-01-12", "locations": ["L01"]},
    )
    assert task.status == "failed"
    assert task.error == "no sales or timeclock data for 2025-01-06..2025-01-12"


def test_an_unusable_policy_file_fails_the_job(tip_sources, settings, tmp_path):
    settings.TIP_POLICY_FILE = tmp_path / "missing.json"
    task = run_job("transform_tips", WEEK1)
    assert (task.status, task.error) == ("failed", "tip policy file missing.json not found")


# --- End to end: REST launch, a real Celery worker, a WebSocket watching ---------------


@pytest.mark.slow
def test_launched_over_rest_run_by_a_worker_watched_over_websocket(
    tip_sources,
    settings,
    runner,
    tmp_path,
    queue,
):

    from django.contrib.auth.models import Group

    from tasks.auth.bearer import issue_local_token
    from tests.support.celery_processes import celery_process, env_for
    from tests.support.servers import Daphne

    runner.groups.add(Group.objects.get_or_create(name="TaskStatus.Tips.Read")[0])
    token = issue_local_token(runner)
    env = env_for(
        queue,
        TIMECLOCK_SOURCE_URL=settings.TIMECLOCK_SOURCE_URL,
        ROSTER_SOURCE_URL=settings.ROSTER_SOURCE_URL,
        TIP_POLICY_FILE=str(settings.TIP_POLICY_FILE),
    )
    server = Daphne(env).start()
    try:
        with celery_process("worker", env, tmp_path, "ready."):
            seen = launch_and_watch(
                server, token, "transform_tips", {**WEEK1, "locations": ["L01", "L08", "L09"]}
            )
    finally:
        server.stop()
    statuses = [p["status"] for p in seen]
    assert statuses[0] == "started" and statuses[-1] == "completed_with_errors", statuses
    assert "error" in statuses and "processing" in statuses
    versions = [p["version"] for p in seen]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    result = seen[-1]["result"]
    assert result["failed_locations"] == {"L09": "no tip policy"}
    assert list(result["locations"]) == ["L01", "L08"]
    assert "2025-06-05" in result["locations"]["L08"]["failed_days"]
    assert cents(result["locations"]["L01"]["card_tips"]) == sum(
        raw_card_cents(d, "L01") for d in DAYS[:7]
    )
    assert (tip_sources / "payroll" / "tips-2025-06-02-2025-06-08.csv").exists()
    assert TipShare.objects.filter(location_id="L01").exists()
