"""What the tips jobs hand out agrees with the tasks that produced it, after re-runs,
crashes and odd input: the payroll file, the statements and their records."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.exceptions import ValidationError

from operations.jobs.tip_policy import DEFAULT_MANAGER_TITLES, manager_title_in
from operations.jobs.tips import distribute
from operations.models import TipShare, TipStatementDelivery
from operations.sources import SourceError
from operations.sources.http import HttpConnector, may_carry_token
from tasks.selectors import task_events
from tests.support.jobs import run_job
from tests.support.servers import ROOT, service_env
from tests.support.smtp_server import smtp_server
from tests.support.source_server import SAMPLE

pytestmark = pytest.mark.django_db(transaction=True)
WEEK1 = {"period_start": "2025-06-02", "period_end": "2025-06-08"}
DAY1 = {"period_start": "2025-06-02", "period_end": "2025-06-02"}
PAYROLL = "tips-2025-06-02-2025-06-08.csv"
ROSTER = json.loads((SAMPLE / "roster" / "employees.json").read_text())["employees"]


def policy_file(tmp_path: Path, name: str = "policies.json", **changes) -> Path:
    """The sample policy with locations' jobs replaced (None: the location's policy
    removed) and top-level keys (``pay_period``, ``manager_titles``) set."""
    data = json.loads((SAMPLE / "tips" / "policies.json").read_text())
    for key, value in changes.items():
        if key in ("pay_period", "manager_titles"):
            data[key] = value
        elif value is None:
            data["policies"].pop(key)
        else:
            data["policies"][key] = {"jobs": value}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def payroll_rows(root: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((root / "payroll" / PAYROLL).read_text())))


def assert_file_agrees(task, root: Path) -> list[dict[str, str]]:
    """The invariant: the result reports the file's own rows and total."""
    rows = payroll_rows(root)
    payroll = task.result["payroll"]
    assert payroll["file"] == task.result["payroll_file"] is not None
    assert payroll["rows"] == len(rows)
    assert Decimal(payroll["total"]) == sum(Decimal(r["total"]) for r in rows)
    assert Decimal(payroll["card_tips"]) == sum(Decimal(r["card_tips"]) for r in rows)
    in_file = {r["location_id"] for r in rows}
    assert in_file - set(task.result["locations"]) == set(payroll["kept_locations"])
    return rows


# --- The payroll file and its task agree --------------------------------------------


def test_a_location_refused_on_a_rerun_is_named_with_the_run_whose_shares_the_file_keeps(
    tip_sources, settings, tmp_path
):
    first = run_job("transform_tips", {**WEEK1, "locations": ["L01", "L03"]})
    assert first.status == "completed", first.error
    l03_rows = TipShare.objects.filter(location_id="L03").count()
    settings.TIP_POLICY_FILE = policy_file(tmp_path, L03={"Server": "10", "GM": "2"})
    again = run_job("transform_tips", {**WEEK1, "locations": ["L01", "L03"]})
    assert again.status == "completed_with_errors"
    rows = assert_file_agrees(again, tip_sources)
    kept = again.result["payroll"]["kept_locations"]
    assert list(kept) == ["L03"]
    assert kept["L03"]["task_ids"] == [str(first.task_id)] and kept["L03"]["tried_by_this_run"]
    assert sum(r["location_id"] == "L03" for r in rows) == len(
        {s for s in TipShare.objects.filter(location_id="L03").values_list("employee_id")}
    )
    assert TipShare.objects.filter(location_id="L03").count() == l03_rows
    # The run's own figures are L01 only; the file's total is more, and the task says why.
    assert again.result["totals"]["total"] == again.result["locations"]["L01"]["total"]
    assert Decimal(again.result["payroll"]["total"]) > Decimal(again.result["totals"]["total"])
    assert again.error.startswith("location L03: this run could not transform it (tip policy ")
    assert f"the payroll file keeps the shares of run {first.task_id} from " in again.error


def test_a_rerun_of_one_location_names_the_others_it_keeps_without_an_error(tip_sources):
    first = run_job("transform_tips", {**WEEK1, "locations": ["L01", "L02"]})
    again = run_job("transform_tips", {**WEEK1, "locations": ["L02"]})
    assert again.status == "completed", again.error
    assert_file_agrees(again, tip_sources)
    kept = again.result["payroll"]["kept_locations"]
    assert kept == {
        "L01": {
            "task_ids": [str(first.task_id)],
            "computed_at": kept["L01"]["computed_at"],
            "tried_by_this_run": False,
        }
    }


def test_a_location_whose_every_day_breaks_on_a_rerun_keeps_its_shares_and_says_so(
    tip_sources, settings, tmp_path
):
    run_job("transform_tips", {**DAY1, "locations": ["L01", "L02"]})
    timeclock = tmp_path / "timeclock"
    (timeclock / "2025-06-02").mkdir(parents=True)
    (timeclock / "locations.json").write_text((SAMPLE / "timeclock" / "locations.json").read_text())
    for loc in ("L01", "L02"):
        source = SAMPLE / "timeclock" / "2025-06-02" / f"{loc}.json"
        (timeclock / "2025-06-02" / f"{loc}.json").write_bytes(
            source.read_bytes()[:100] if loc == "L02" else source.read_bytes()
        )
    settings.TIMECLOCK_SOURCE_URL = f"file://{timeclock}"
    again = run_job("transform_tips", {**DAY1, "locations": ["L01", "L02"]})
    assert again.status == "completed_with_errors"
    assert again.result["failed_locations"]["L02"].startswith("no day could be transformed")
    assert list(again.result["payroll"]["kept_locations"]) == ["L02"]
    assert "location L02: this run could not transform it (no day could be" in again.error
    rows = list(csv.DictReader(io.StringIO((tip_sources / "payroll" / DAY_FILE).read_text())))
    assert Decimal(again.result["payroll"]["total"]) == sum(Decimal(r["total"]) for r in rows)


DAY_FILE = "tips-2025-06-02-2025-06-02.csv"


# --- Pools: reversals, amounts our columns cannot hold ----------------------------------


def one_day_source(tmp_path: Path, tips: list[str], cash: str = "4.00") -> Path:
    """L01 on 2025-06-02: one closed check per card tip, two servers of 5.5 h each."""
    root = tmp_path / "one-day"
    day = "2025-06-02"
    for kind in ("sales", "timeclock"):
        (root / kind / day).mkdir(parents=True)
        (root / kind / "locations.json").write_text((SAMPLE / kind / "locations.json").read_text())
    checks = [
        {
            "check_id": f"{day}-{n}",
            "business_date": day,
            "revenue_center": "Bar",
            "opened_at": f"{day}T19:00:00-04:00",
            "guest_count": 1,
            "status": "closed",
            "items": [{"qty": 1, "unit_price": 50.0}],
            "tax": 0,
            "tip": tip,
            "payments": [{"type": "credit", "amount": 50.0, "tip": tip}],
        }
        for n, tip in enumerate(tips)
    ]
    shifts = [
        {
            "shift_id": f"{day}-{n}",
            "employee_id": f"L01-E9{n:02d}",
            "employee_name": f"Test {n}",
            "job": "Server",
            "hourly_rate": 20,
            "clock_in": f"{day}T16:00:00-04:00",
            "clock_out": f"{day}T22:00:00-04:00",
            "breaks": [
                {"kind": "meal", "start": f"{day}T19:00:00-04:00", "end": f"{day}T19:30:00-04:00"}
            ],
        }
        for n in (1, 2)
    ]
    (root / "sales" / day / "L01.json").write_text(json.dumps({"checks": checks}))
    (root / "timeclock" / day / "L01.json").write_text(json.dumps({"shifts": shifts}))
    (root / "sales" / day / "L01.cash-tips.json").write_text(
        json.dumps({"declarations": [{"employee_id": "L01-E901", "amount": cash}]})
    )
    return root


def use(settings, root: Path, tmp_path: Path) -> None:
    settings.SALES_SOURCE_URL = f"file://{root / 'sales'}"
    settings.TIMECLOCK_SOURCE_URL = f"file://{root / 'timeclock'}"
    settings.ACCOUNTING_TARGET_URL = f"file://{tmp_path / 'accounting'}"
    settings.TIP_POLICY_FILE = SAMPLE / "tips" / "policies.json"


@pytest.mark.parametrize(
    ("tips", "cash", "card_pool", "error"),
    [
        (["10.00", "-2.50"], "4.00", "7.50", None),
        (["3.00", "-5.00"], "4.00", None, "the card pool ends negative ($-2.00)"),
        (["1.00"], "-0.01", None, "the cash pool ends negative ($-0.01)"),
        (["250000000.00"], "0", None, "employee L01-E901's share is beyond $99999999.99"),
    ],
)
def test_reversals_are_pooled_and_an_unpayable_day_is_one_error(
    settings, tmp_path, tips, cash, card_pool, error
):
    use(settings, one_day_source(tmp_path, tips, cash), tmp_path)
    task = run_job("transform_tips", {**DAY1, "locations": ["L01"]})
    if error is None:
        assert task.status == "completed", task.error
        assert task.result["locations"]["L01"]["card_tips"] == card_pool
        shares = TipShare.objects.order_by("employee_id").values_list("card_tips", flat=True)
        assert sum(shares) == Decimal(card_pool)
    else:
        assert task.status == "failed"
        assert f"(2025-06-02: {error}" in task.error
        assert not TipShare.objects.exists()


# --- Manager titles from the policy file -------------------------------------------------


@pytest.mark.parametrize(
    "job",
    ["GM", "AGM", "A.G.M.", "Shift Leader", "Shift-Lead", "shift  lead", "Kitchen Manager", "Mgr"],
)
def test_usual_manager_titles_are_recognised(job):
    assert manager_title_in(job) is not None


@pytest.mark.parametrize("job", ["Server", "Bartender", "Host", "Busser", "Line Cook", "Agmon"])
def test_jobs_that_share_are_not_taken_for_managers(job):
    assert manager_title_in(job) is None


def test_the_policy_file_names_the_manager_titles(tip_sources, settings, tmp_path):
    settings.TIP_POLICY_FILE = policy_file(
        tmp_path,
        manager_titles=[*DEFAULT_MANAGER_TITLES, "captain"],
        L01={"Server": "10", "Captain": "3"},
        L02={"Server": "10", "Shift-Lead": "3"},
    )
    task = run_job("transform_tips", {**DAY1, "locations": ["L01", "L02", "L03"]})
    failed = task.result["failed_locations"]
    assert set(failed) == {"L01", "L02"}
    assert "'Captain'" in failed["L01"] and "'Shift-Lead'" in failed["L02"]


# --- Statements follow the shares, both ways -------------------------------------------


def test_someone_dropped_from_the_pool_is_told_their_share_is_now_zero(
    tip_sources, settings, tmp_path, smtp
):
    run_job("transform_tips", {**DAY1, "locations": ["L01"]})
    first = run_job("email_tips", WEEK1)
    assert first.status == "completed", first.error
    hosts = set(
        TipShare.objects.filter(job="Host", location_id="L01").values_list("employee_id", flat=True)
    )
    assert hosts
    settings.TIP_POLICY_FILE = policy_file(
        tmp_path, L01={"Server": "10", "Bartender": "10", "Busser": "5"}
    )
    run_job("transform_tips", {**DAY1, "locations": ["L01"]})
    before = len(smtp.received)
    again = run_job("email_tips", WEEK1)
    assert again.status == "completed", again.error
    assert again.result["no_share_corrections"] == len(hosts)
    mails = smtp.received[before:]
    addresses = {e["employee_id"]: e["email"] for e in ROSTER}
    zero = [m for m in mails if "is now $0.00" in m.message.get_body(("plain",)).get_content()]
    assert {m.rcpt_tos[0] for m in zero} == {addresses[e] for e in hosts}
    for got in zero:
        assert got.message["Subject"] == "Corrected tip statement 2025-06-02 to 2025-06-08"
        assert "Total:      $0.00" in got.message.get_body(("plain",)).get_content()
    assert run_job("email_tips", WEEK1).result["sent"] == 0


def test_statements_made_from_shares_the_last_run_could_not_replace_say_so(
    tip_sources, settings, tmp_path, smtp
):
    first = run_job("transform_tips", {**DAY1, "locations": ["L01", "L02"]})
    settings.TIP_POLICY_FILE = policy_file(tmp_path, L02={"Server": "10", "AGM": "1"})
    run_job("transform_tips", {**WEEK1, "locations": ["L01", "L02"]})
    task = run_job("email_tips", WEEK1)
    assert task.status == "completed_with_errors"
    assert any(
        f"location L02: statements state the shares of run {first.task_id}" in event
        for event in task_errors(task)
    )


def task_errors(task) -> list[str]:
    return [e.error for e in task_events(task) if e.error]


def test_only_a_whole_pay_period_of_the_policy_is_stated_and_never_twice(
    tip_sources, settings, tmp_path, smtp
):
    run_job("transform_tips", {**DAY1, "locations": ["L01"]})
    assert run_job("email_tips", WEEK1).status == "completed"
    with pytest.raises(ValidationError) as refused:
        run_job("email_tips", {"period_start": "2025-06-04", "period_end": "2025-06-05"})
    assert "not a pay period of the tip policy" in str(refused.value.detail["period_end"][0])
    # The policy's periods change to two weeks: the period holding the one stated overlaps.
    settings.TIP_POLICY_FILE = policy_file(
        tmp_path, pay_period={"kind": "biweekly", "anchor": "2025-05-26"}
    )
    count = len(smtp.received)
    task = run_job("email_tips", {"period_start": "2025-05-26", "period_end": "2025-06-08"})
    assert (task.status, task.error) == (
        "failed",
        "pay period 2025-05-26..2025-06-08 overlaps 2025-06-02..2025-06-08, already stated",
    )
    assert len(smtp.received) == count


def test_a_period_ending_today_is_not_over(tip_sources):
    today = timezone.localdate()
    for operation in ("transform_tips", "email_tips"):
        with pytest.raises(ValidationError) as refused:
            run_job(
                operation,
                {
                    "period_start": (today - timedelta(days=6)).isoformat(),
                    "period_end": today.isoformat(),
                },
            )
        assert refused.value.detail["period_end"] == ["is not over yet"]


def test_an_address_longer_than_its_column_is_an_error_before_anything_is_sent(
    tip_sources, settings, tmp_path, smtp
):
    run_job("transform_tips", {**DAY1, "locations": ["L01"]})
    first = TipShare.objects.order_by("employee_id").first()
    assert first is not None
    long_address = "a" * 60 + "@" + ".".join(["b" * 60] * 4) + ".example.com"
    assert 254 < len(long_address) < 320
    roster = tmp_path / "roster"
    roster.mkdir()
    data = json.loads((SAMPLE / "roster" / "employees.json").read_text())
    for record in data["employees"]:
        if record["employee_id"] == first.employee_id:
            record["email"] = long_address
    (roster / "employees.json").write_text(json.dumps(data))
    settings.ROSTER_SOURCE_URL = f"file://{roster}"
    task = run_job("email_tips", WEEK1)
    assert task.status == "completed_with_errors"
    assert task.error == (
        f"employee {first.employee_id} ({first.employee_name}): email address on the roster "
        "longer than 254 characters"
    )
    assert long_address not in {r.rcpt_tos[0] for r in smtp.received}
    assert task.result["sent"] == len(smtp.received) == task.result["statements"] - 1
    assert not TipStatementDelivery.objects.filter(employee_id=first.employee_id).exists()


# --- At most one statement per content, even across a crash ------------------------------


def test_a_worker_killed_between_send_and_record_sends_once_more_with_the_same_message_id(
    tip_sources, tmp_path
):
    """The mail server accepts the third statement; before the worker records it, the
    record is blocked and the worker killed. The re-run sends that statement once more,
    with the same Message-ID, and everything else exactly once."""
    run_job("transform_tips", {**DAY1, "locations": ["L01"]})
    table = TipStatementDelivery._meta.db_table
    params = connection.settings_dict
    blocker = psycopg.connect(
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        dbname=params["NAME"],
        user=params["USER"],
        password=params["PASSWORD"] or None,
    )
    held = threading.Event()

    def block_the_record(count: int) -> None:
        if count == 3:
            blocker.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")  # reads go on
            held.set()

    with smtp_server() as server:
        server.handler.on_accept = block_the_record
        env = service_env(
            EMAIL_URL=f"smtp://127.0.0.1:{server.port}",
            EMAIL_RATE_PER_SECOND="1000",
            ROSTER_SOURCE_URL=f"file://{SAMPLE / 'roster'}",
            TIP_POLICY_FILE=str(SAMPLE / "tips" / "policies.json"),
        )
        worker = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "run_operation",
                "email_tips",
                "--period_start=2025-06-02",
                "--period_end=2025-06-08",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            assert held.wait(60), "the third statement never reached the mail server"
            backend = wait_for_blocked_update(blocker, table)
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
            # The dead worker's update never reaches the table.
            blocker.execute("SELECT pg_terminate_backend(%s)", [backend])
        finally:
            blocker.rollback()
            blocker.close()
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
        assert len(server.received) == 3
        interrupted = server.received[2]
        assert TipStatementDelivery.objects.get(
            message_id=interrupted.message["Message-ID"]
        ).state == ("intended")

        with override_settings(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST=server.host,
            EMAIL_PORT=server.port,
            EMAIL_USE_TLS=False,
            EMAIL_USE_SSL=False,
            EMAIL_HOST_USER="",
            EMAIL_HOST_PASSWORD="",
            EMAIL_RATE_PER_SECOND=1000,
        ):
            rerun = run_job("email_tips", WEEK1)
            assert rerun.status == "completed", rerun.error
            assert rerun.result["resent_after_interruption"] == 1
            assert run_job("email_tips", WEEK1).result["sent"] == 0
        received = server.received
    statements = TipShare.objects.values("employee_id").distinct().count()
    by_recipient: dict[str, list[str]] = {}
    for got in received:
        by_recipient.setdefault(got.rcpt_tos[0], []).append(got.message["Message-ID"])
    assert len(by_recipient) == statements
    twice = {r: ids for r, ids in by_recipient.items() if len(ids) > 1}
    assert twice == {interrupted.rcpt_tos[0]: [interrupted.message["Message-ID"]] * 2}
    assert len({got.message["Message-ID"] for got in received}) == statements
    assert set(TipStatementDelivery.objects.values_list("state", flat=True)) == {"sent"}


def wait_for_blocked_update(conn: psycopg.Connection, table: str) -> int:
    """The backend of the worker waiting for the table: its record is held."""
    with psycopg.connect(conn.info.dsn, autocommit=True) as watcher:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT l.pid FROM pg_locks l WHERE NOT l.granted AND l.relation = %s::regclass",
                [table],
            ).fetchone()
            if row:
                return int(row[0])
            time.sleep(0.05)
    raise AssertionError("the worker never tried to record the send")


# --- Generated: any pool splits to the cent; any re-run leaves the file equal the result --


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    pool_cents=st.integers(min_value=0, max_value=10**10),
    weights=st.lists(
        st.tuples(st.integers(0, 24 * 60), st.sampled_from(["0.5", "1", "2.5", "10", "1000"])),
        min_size=1,
        max_size=60,
    ),
)
def test_any_hours_points_and_pool_split_to_the_cent(pool_cents, weights):
    pool = Decimal(pool_cents) / 100
    keyed = {f"E{n:03d}": Decimal(m) / 60 * Decimal(p) for n, (m, p) in enumerate(weights)}
    if pool and not any(keyed.values()):
        return
    shares = distribute(pool, keyed)
    assert sum(shares.values()) == pool
    total = sum(keyed.values())
    for key, weight in keyed.items():
        assert shares[key] >= 0
        if total:
            assert abs(shares[key] - pool * weight / total) < Decimal("0.01")


@hypothesis_settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    changes=st.lists(
        st.tuples(
            st.sampled_from(["L01", "L02", "L03"]),
            st.sampled_from(["refuse", "drop-job", "restore", "rerun-alone"]),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_any_sequence_of_reruns_leaves_the_payroll_file_equal_to_the_result(
    tip_sources, settings, tmp_path_factory, changes
):
    tmp = tmp_path_factory.mktemp("policy")
    TipShare.objects.all().delete()
    settings.TIP_POLICY_FILE = SAMPLE / "tips" / "policies.json"
    base = run_job("transform_tips", {**DAY1, "locations": ["L01", "L02", "L03"]})
    assert base.status == "completed", base.error
    policy: dict = {}
    for n, (location, change) in enumerate(changes):
        if change == "refuse":
            policy[location] = {"Server": "10", "Shift Lead": "1"}
        elif change == "drop-job":
            policy[location] = {"Server": "10", "Bartender": "10"}
        else:
            policy.pop(location, None)
        settings.TIP_POLICY_FILE = policy_file(tmp, f"p{n}.json", **policy)
        wanted = [location] if change == "rerun-alone" else ["L01", "L02", "L03"]
        task = run_job("transform_tips", {**DAY1, "locations": wanted})
        if task.status == "failed":
            continue
        rows = list(csv.DictReader(io.StringIO((tip_sources / "payroll" / DAY_FILE).read_text())))
        assert Decimal(task.result["payroll"]["total"]) == sum(Decimal(r["total"]) for r in rows)
        assert task.result["payroll"]["rows"] == len(rows)
        in_file = {r["location_id"] for r in rows}
        kept = task.result["payroll"]["kept_locations"]
        assert in_file == set(task.result["locations"]) | set(kept)
        for location_id, info in kept.items():
            assert info["tried_by_this_run"] == (location_id in task.result["failed_locations"])


# --- Source tokens never travel bare ---------------------------------------------------


def test_the_source_token_is_sent_over_https_or_to_loopback_only():
    assert may_carry_token("https://sales.example.com/api")
    assert may_carry_token("http://127.0.0.1:8080/api")
    assert may_carry_token("http://[::1]:8080/api")
    assert may_carry_token("http://localhost/api")
    assert not may_carry_token("http://sales.example.com/api")
    assert not may_carry_token("http://10.0.0.5/api")
    connector = HttpConnector("http://192.0.2.10/api", token="s3cret")
    with pytest.raises(SourceError) as refused:
        connector.list_locations()
    assert "SOURCE_TOKEN is only sent over https" in str(refused.value)
    assert "s3cret" not in str(refused.value)
