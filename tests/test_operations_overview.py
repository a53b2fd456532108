"""What runs next, what ran last, who is working: GET /operations, /operations/{op}/stats
and the schedule page, against real workers that come and go."""

from __future__ import annotations

import statistics
import time
import uuid

import pytest
from django.core.cache import cache
from playwright.sync_api import expect
from rest_framework.test import APIClient

from operations import overview
from operations.overview import HISTORY_RUNS
from tasks import tracker
from tasks.auth.bearer import issue_local_token
from tasks.models import TaskStatus
from tests.support import browser as chromium
from tests.support.browser import log_in, watch
from tests.support.celery_processes import celery_process, env_for
from tests.support.servers import Daphne

pytestmark = pytest.mark.django_db(transaction=True)
browser, context = chromium.browser, chromium.context


@pytest.fixture(autouse=True)
def fresh_runners():
    cache.clear()  # the runners' snapshot is cached a few seconds
    yield
    cache.clear()


def finished_run(operation: str, status: str, seconds: float) -> str:
    handle = tracker.create_task(operation)
    if status == "failed":
        handle.fail("boom")
    else:
        if status == "completed_with_errors":
            handle.error("one location")
        handle.complete({})
    TaskStatus.objects.filter(pk=handle.task_id).update(
        updated_at=TaskStatus.objects.get(pk=handle.task_id).created_at + seconds
    )
    return handle.task_id


def test_schedules_in_words_and_the_next_run_in_the_time_zone(settings):
    settings.TIME_ZONE = "America/New_York"
    assert overview.in_words("30 4 * * *") == "every day at 04:30"
    assert overview.in_words("0 5 * * 1") == "every Monday at 05:00"
    assert overview.in_words("*/30 * * * *") == "every 30 minutes"
    assert overview.in_words("0 3 1 * *") == "cron 0 3 1 * *"
    from datetime import datetime
    from zoneinfo import ZoneInfo

    now = datetime(2025, 6, 11, 4, 29, tzinfo=ZoneInfo("America/New_York"))
    assert overview.next_run("30 4 * * *", now) == now.replace(minute=30)
    monday = overview.next_run("0 5 * * 1", now)
    assert (monday.weekday(), monday.hour, monday.day) == (0, 5, 16)


def test_get_operations_lists_what_the_reader_may_see(api):
    last = finished_run("daily_sales", "completed", 12)
    tracker.create_task("transform_tips")  # personal data: not for a plain reader
    body = api.get("/operations").json()
    names = [op["operation"] for op in body["operations"]]
    assert "daily_sales" in names and "transform_tips" not in names and "email_tips" not in names
    sales = next(op for op in body["operations"] if op["operation"] == "daily_sales")
    assert sales["schedule"] == "every day at 04:30" and sales["next_run"]
    assert sales["last_run"]["task_id"] == last and sales["last_run"]["duration"] == 12
    assert sales["can_launch"] is False  # a reader, not a runner
    assert {"workers", "queue", "beat", "problems"} <= set(body)
    assert any("No worker" in p for p in body["problems"])  # none runs in this test


def test_the_schedule_page_offers_run_only_to_a_runner(client, django_user_model, runner):
    reader = django_user_model.objects.create_user("reader-only", password="pw")
    client.force_login(reader)
    assert "data-run" not in client.get("/schedule").content.decode()
    client.force_login(runner)
    page = client.get("/schedule").content.decode()
    assert 'data-run href="/?run=daily_sales"' in page


def test_the_monitor_s_header_says_no_worker_is_running(client, admin_user):
    client.force_login(admin_user)
    page = client.get("/").content.decode()
    assert 'role="alert">No worker is running' in page


def test_the_monitor_s_header_never_waits_on_the_workers_once_it_has_a_snapshot(client, admin_user):
    """A stale snapshot is shown at once and renewed behind the page's back."""
    client.force_login(admin_user)
    stale = {"workers": [], "queue": {}, "beat": None, "problems": ["an old warning"]}
    cache.set(overview._SNAPSHOT_KEY, {"taken_at": time.time() - 30, "snapshot": stale}, 60)
    began = time.monotonic()
    page = client.get("/").content.decode()
    assert time.monotonic() - began < overview.INSPECT_TIMEOUT
    assert "an old warning" in page
    deadline = time.monotonic() + 10
    while cache.get(overview._SNAPSHOT_KEY)["snapshot"] == stale:
        assert time.monotonic() < deadline, "the snapshot was not renewed"
        time.sleep(0.1)
    renewed = cache.get(overview._SNAPSHOT_KEY)["snapshot"]
    assert any("No worker" in p for p in renewed["problems"]), renewed
    assert "No worker is running" in client.get("/").content.decode()


def test_the_embedded_default_s_stats_agree_with_postgresql_s_query():
    """SQLite (``make run``) computes the figures in Python: the same runs, the same
    percentiles (linear interpolation, as percentile_cont) as the PostgreSQL query."""
    statuses = ["completed", "failed", "completed_with_errors"]
    for i in range(HISTORY_RUNS + 7):
        finished_run("invoice_sync", statuses[i % 3], seconds=(i * 7) % 23 + 1)
    runs, median, p95 = overview._stats_postgresql("invoice_sync")
    fallback = overview._recent_runs("invoice_sync")
    durations = sorted(run["duration"] for run in fallback)
    assert fallback == runs and len(runs) == HISTORY_RUNS
    assert statistics.median(durations) == pytest.approx(median)
    assert overview._percentile(durations, 0.95) == pytest.approx(p95)


def test_stats_are_computed_in_the_database_and_hide_personal_data(api, django_user_model):
    durations = [5, 7, 9, 11, 13, 100]
    statuses = [
        "completed",
        "completed",
        "failed",
        "completed",
        "completed_with_errors",
        "completed",
    ]
    for seconds, status in zip(durations, statuses, strict=True):
        finished_run("invoice_sync", status, seconds)
    tracker.create_task("invoice_sync")  # still running: not in the history
    body = api.get("/operations/invoice_sync/stats").json()
    assert body["count"] == 6 and len(body["runs"]) == 6
    assert body["median_duration"] == statistics.median(durations)
    assert body["p95_duration"] == pytest.approx(100 - 0.25 * 87, abs=0.1)  # percentile_cont
    assert body["failed_share"] == round(1 / 6, 3)
    assert body["with_errors_share"] == round(1 / 6, 3)
    assert [r["duration"] for r in body["runs"]] == list(reversed([float(d) for d in durations]))
    assert api.get("/operations/transform_tips/stats").status_code == 404
    assert api.get("/operations/nope/stats").status_code == 404
    staff = django_user_model.objects.create_user("boss", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_local_token(staff)}")
    assert client.get("/operations/transform_tips/stats").json()["count"] == 0


@pytest.mark.browser
def test_the_schedule_page_shows_a_worker_that_starts_and_stops(context, tmp_path, settings):
    from django.contrib.auth import get_user_model

    for seconds, status in ((3, "completed"), (4, "failed"), (6, "completed")):
        finished_run("daily_sales", status, seconds)
    staff = get_user_model().objects.create_user("boss", password="pw", is_staff=True)
    queue = f"test-overview-{uuid.uuid4().hex[:8]}"
    # The worker's settings (a beat key of its own: the watchdog judges no run due before
    # this test first looked, so no "late" banner stands beside the worker's).
    server = Daphne(env_for(queue, DEBUG="0", DAILY_SALES_SCHEDULE="30 4 * * *")).start()
    try:
        log_in(context, server.http, staff)
        page = watch(context.new_page()).page
        page.goto(f"{server.http}/schedule")
        # (Other banners may stand beside it, such as a scheduled run the watchdog finds late.)
        expect(page.get_by_role("alert").filter(has_text="No worker is running")).to_be_visible()
        row = page.locator('tr[data-operation="daily_sales"]')
        expect(row).to_contain_text("every day at 04:30")
        expect(row.locator(".history-chart rect")).to_have_count(3)
        expect(row.locator(".bar-failed")).to_have_count(1)
        expect(row.locator('[data-field="figures"]')).to_contain_text("median 4.0 s")
        row.locator("[data-run]").click()  # "Run…": the monitor, this operation's form open
        expect(page.locator("#run-daily_sales")).to_be_visible()
        page.goto(f"{server.http}/schedule")
        with celery_process("worker", env_for(queue), tmp_path, "ready."):
            time.sleep(6)  # past the page's few seconds of cached snapshot
            page.reload()
            expect(page.locator("tr[data-worker]")).to_have_count(1)
            expect(page.get_by_role("alert")).to_have_count(0)
        time.sleep(6)
        page.reload()
        expect(page.locator("tr[data-worker]")).to_have_count(0)
        expect(page.get_by_role("alert")).to_contain_text("No worker is running")
    finally:
        server.stop()
