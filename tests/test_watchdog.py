"""The watchdog: scheduled runs that did not start are late, seen without beat.

Real PostgreSQL and Redis; a real SMTP server on loopback; a real worker (whose
watchdog thread does the looking) and a real beat that is stopped, then started.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from django.core.cache import cache

from operations import overview, running_long, watch, watchdog
from operations.celery_tasks import send_watchdog_alert
from operations.models import AlertDelivery
from tasks import tracker
from tasks.models import TaskStatus
from tests.support.alerting import alert_env, http_receiver, queued
from tests.support.celery_processes import celery_process, wait_for
from tests.support.smtp_server import free_port

pytestmark = pytest.mark.django_db(transaction=True)

YEARLY = "0 0 1 1 *"  # never fires during a test


@pytest.fixture
def watched(settings, queue, smtp, hook):
    """A schedule of this test's own: only invoice_sync, daily at a time 15 minutes ago
    (its due time, given with the settings); alerts to smtp and hook."""
    settings.BEAT_LOCK_KEY = f"{queue}-beat"
    for name in (
        "DAILY_SALES_SCHEDULE",
        "TRANSFORM_TIPS_SCHEDULE",
        "EMAIL_TIPS_SCHEDULE",
        "FOOD_HANDLER_PDFS_SCHEDULE",
        "FOOD_HANDLER_LINKS_SCHEDULE",
    ):
        setattr(settings, name, YEARLY)
    ago = datetime.fromtimestamp(time.time() - 900, ZoneInfo(settings.TIME_ZONE))
    settings.INVOICE_SYNC_SCHEDULE = f"{ago.minute} {ago.hour} * * *"
    settings.SCHEDULE_GRACE_SECONDS = 600
    settings.ALERT_EMAILS = ["ops@example.com"]
    settings.ALERT_WEBHOOK_URL = hook.url
    settings.PUBLIC_BASE_URL = "https://tasks.example.com"
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield settings, ago.replace(second=0, microsecond=0).timestamp()
    for key in client.scan_iter(f"{queue}-beat:*"):
        client.delete(key)


def watch_since(settings: Any, when: float) -> None:
    redis.Redis.from_url(settings.REDIS_URL).set(f"{settings.BEAT_LOCK_KEY}:watchdog:since", when)


@pytest.mark.parametrize(
    ("expression", "now", "due"),
    [
        ("30 4 * * *", (2025, 6, 11, 4, 29), (2025, 6, 10, 4, 30)),
        ("30 4 * * *", (2025, 6, 11, 4, 30), (2025, 6, 11, 4, 30)),
        ("*/30 * * * *", (2025, 6, 11, 4, 29), (2025, 6, 11, 4, 0)),
        ("0 5 * * 1", (2025, 6, 11, 4, 29), (2025, 6, 9, 5, 0)),  # the Monday before
        ("15 6 * * 1-5", (2025, 6, 15, 12, 0), (2025, 6, 13, 6, 15)),  # Sunday: Friday's
        ("0 0 1 1 *", (2025, 6, 11, 4, 29), (2025, 1, 1, 0, 0)),
        # The night clocks go back (America/New_York, 2025-11-02): 01:30 happens twice.
        ("30 4 * * *", (2025, 11, 2, 12, 0), (2025, 11, 2, 4, 30)),
    ],
)
def test_the_last_due_time_of_a_crontab(settings, expression, now, due):
    zone = ZoneInfo(settings.TIME_ZONE)
    found = watchdog.last_due(expression, datetime(*now, tzinfo=zone))
    assert found == datetime(*due, tzinfo=zone)


def test_a_scheduled_run_that_did_not_appear_is_late_shown_and_alerted_once(
    watched, queue, smtp, hook, client, admin_user, api
):
    settings, due = watched
    watch_since(settings, due - 3600)

    # Within the grace period: not yet late.
    assert watchdog.schedule_state(now=due + 599)["invoice_sync"].late_since is None
    state = watchdog.schedule_state(now=due + 601)["invoice_sync"]
    assert state.late_since == due and state.last_due == due and state.last_started is None
    # A run due before the service watched is not judged.
    watch_since(settings, due + 1)
    assert watchdog.schedule_state(now=due + 601)["invoice_sync"].late_since is None
    watch_since(settings, due - 3600)

    # Three checks, from any number of workers: one alert message.
    for _ in range(3):
        assert watch.check(now=due + 700) == ["late:invoice_sync"]
    [message] = queued(f"{queue}-alerts", "operations.send_watchdog_alert")
    assert message["argsrepr"] == repr(["late", "invoice_sync", due, None])
    assert send_watchdog_alert("late", "invoice_sync", due) == 2
    assert send_watchdog_alert("late", "invoice_sync", due) == 0  # a redelivery
    [mail] = smtp.received
    assert mail.message["Subject"] == "[tasks] invoice_sync: scheduled run is late"
    body = mail.message.get_content()
    assert "The scheduled run of invoice_sync due at " in body
    assert "has not started within 10 min; beat is not running (never seen)." in body
    assert "Schedule: https://tasks.example.com/schedule" in body
    assert "has not started within 10 min" in hook.bodies[0]["text"]
    assert AlertDelivery.objects.filter(event="late", state="sent").count() == 2

    # The gauges Prometheus alerts on.
    from prometheus_client import REGISTRY

    labels = {"operation": "invoice_sync"}
    sample = REGISTRY.get_sample_value
    assert sample("tasksite_operation_late", labels) == 1
    assert sample("tasksite_operation_last_due_timestamp_seconds", labels) == due
    assert sample("tasksite_operation_next_due_timestamp_seconds", labels) == due + 86400

    # Shown: GET /operations, the schedule page, the monitor's header.
    body = api.get("/operations").json()
    sync = next(op for op in body["operations"] if op["operation"] == "invoice_sync")
    assert sync["late_since"] == int(due)
    assert body["beat_status"] == "beat is not running (never seen)"
    assert body["beat_last_seen"] is None
    assert any("The scheduled run of invoice_sync due at " in p for p in body["problems"])
    client.force_login(admin_user)
    cache.clear()
    page = client.get("/schedule").content.decode()
    assert 'data-field="late">late: due ' in page
    assert "The scheduled run of invoice_sync due at " in client.get("/").content.decode()

    # The run appears (beat came back): no longer late, gauge back to 0.
    task = tracker.create_task("invoice_sync", launched_by="schedule")
    TaskStatus.objects.filter(pk=task.task_id).update(created_at=due + 650)
    assert watch.check(now=due + 700) == []
    assert sample("tasksite_operation_late", labels) == 0
    assert sample("tasksite_operation_last_started_timestamp_seconds", labels) == due + 650


def test_beat_liveness_in_plain_words(watched, settings):
    now = time.time()
    assert watchdog.beat_in_words(None, now=now) == "beat is not running (never seen)"
    assert watchdog.beat_in_words(now - 10, now=now) == "beat last seen just now"
    assert watchdog.beat_in_words(now - 100, now=now) == "beat last seen 1 min 40 s ago"
    assert watchdog.beat_in_words(now - 180, now=now) == (
        "beat is not running (last seen 3 min ago)"
    )
    problems = overview.schedule_problems({}, now - 180, now=now)
    assert problems == ["Beat is not running (last seen 3 min ago): scheduled runs will not start."]
    assert overview.schedule_problems({}, None, now=now) == []


@pytest.mark.slow
def test_with_beat_stopped_a_real_worker_reports_the_run_late_and_beat_s_return_recovers(
    smtp, hook, queue, tmp_path, settings
):
    metrics_port = free_port()
    env = alert_env(
        queue,
        smtp,
        hook,
        INVOICE_SYNC_SCHEDULE="* * * * *",  # every minute
        SCHEDULE_GRACE_SECONDS="3",
        WATCHDOG_CHECK_SECONDS="1",
        WORKER_METRICS_PORT=str(metrics_port),
        METRICS_TOKEN="watchdog-test-token",
        BEAT_SILENT_SECONDS="5",
    )
    settings.BEAT_LOCK_KEY = env["BEAT_LOCK_KEY"]
    settings.INVOICE_SYNC_SCHEDULE = "* * * * *"
    settings.DAILY_SALES_SCHEDULE = YEARLY
    settings.SCHEDULE_GRACE_SECONDS = 3

    def scrape() -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{metrics_port}/metrics",
            headers={"Authorization": "Bearer watchdog-test-token"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read().decode()

    late_line = 'tasksite_operation_late{operation="invoice_sync"} 1.0'
    with celery_process("worker", env, tmp_path, "ready.") as worker:
        # No beat: the next minute's run never appears; the worker's watchdog says so.
        wait_for(
            lambda: any("scheduled run is late" in m.message["Subject"] for m in smtp.received),
            75,
            "the late alert",
        )
        assert late_line in scrape()
        assert 'tasksite_operation_next_due_timestamp_seconds{operation="invoice_sync"}' in (
            scrape()
        )
        late = watchdog.schedule_state()["invoice_sync"]
        assert late.late_since is not None
        time.sleep(3)  # three more checks: still one alert
        late_mails = [m for m in smtp.received if "scheduled run is late" in m.message["Subject"]]
        assert len(late_mails) == 1

        # Beat comes back: the next minute's run is launched, and nothing is late.
        with celery_process("beat", env, tmp_path, "beat: Starting"):
            wait_for(
                lambda: TaskStatus.objects.filter(
                    operation="invoice_sync", launched_by="schedule"
                ).exists(),
                75,
                "beat's run",
            )
            wait_for(lambda: late_line not in scrape(), 10, "the late gauge to clear")
            assert watchdog.schedule_state()["invoice_sync"].late_since is None
            assert "tasksite_beat_last_tick_timestamp_seconds " in scrape()
            assert watchdog.beat_in_words(watchdog.beat_last_tick()) == "beat last seen just now"
        log = worker.log_path.read_text(errors="replace")
    assert "has not started" in log
    assert uuid.UUID(AlertDelivery.objects.filter(event="late").first().task_id)


@pytest.fixture
def queue(settings):
    name = f"test-watchdog-{uuid.uuid4().hex[:10]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = name
    settings.ALERT_QUEUE = f"{name}-alerts"
    yield name
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(name, f"{name}-alerts")
    for key in client.scan_iter(f"{name}-beat:*"):
        client.delete(key)


@pytest.fixture
def smtp(settings):
    from tests.support.smtp_server import smtp_server

    with smtp_server() as server:
        server.configure(settings, backoff=0.01, retries=1)
        yield server


@pytest.fixture
def hook():
    with http_receiver() as receiver:
        yield receiver


def test_a_run_slower_than_its_history_is_running_long_shown_and_alerted_once(
    watched, queue, smtp, hook, client, admin_user
):
    from tests.test_operations_overview import finished_run

    settings, _ = watched
    settings.RUNNING_LONG_FACTOR = 3
    settings.RUNNING_LONG_MIN_SECONDS = 5
    for seconds in (2, 2, 3):
        finished_run("get_mpvs", "completed", seconds)
    slow = tracker.create_task("get_mpvs", launched_by="alice").task_id
    TaskStatus.objects.filter(pk=slow).update(created_at=time.time() - 60)
    fresh = tracker.create_task("get_mpvs", launched_by="alice").task_id  # just started
    without_history = tracker.create_task("invoice_sync", launched_by="bob").task_id
    TaskStatus.objects.filter(pk=without_history).update(created_at=time.time() - 3600)

    [run] = running_long.long_runs()
    assert run.task_id == slow and run.usual == pytest.approx(2.9)
    assert run.words.startswith(f"get_mpvs {slow[:8]} has been running 1 min")
    assert "more than 3 × its usual 3 s (p95 of its last runs)." in run.words
    assert running_long.note_for(TaskStatus.objects.get(pk=fresh)) is None

    # Shown: the monitor's header and the task's page.
    client.force_login(admin_user)
    cache.clear()
    assert f"Running long: get_mpvs {slow[:8]} has been running" in client.get("/").content.decode()
    page = client.get(f"/tasks/{slow}").content.decode()
    assert 'data-field="running-long">Running long: get_mpvs' in page
    assert 'data-field="running-long"' not in client.get(f"/tasks/{fresh}").content.decode()

    # Alerted once, however many looks and workers.
    for _ in range(3):
        assert f"running_long:{slow}" in watch.check()
    [message] = queued(f"{queue}-alerts", "operations.send_watchdog_alert")
    args = eval(message["argsrepr"])  # noqa: S307 (our own message's repr)
    assert args[0] == "running_long" and args[3] == slow
    assert send_watchdog_alert(*args) == 2
    assert send_watchdog_alert(*args) == 0
    [mail] = smtp.received
    assert mail.message["Subject"] == "[tasks] get_mpvs is running long"
    body = mail.message.get_content()
    assert f"Task: {slow}" in body and "Usual (p95): 3 s" in body

    # Once it ends, it is no longer running long (and nothing more is sent).
    with tracker.open_task(slow) as handle:
        handle.complete({})
    assert running_long.long_runs() == []
    assert send_watchdog_alert(*args) == 0
