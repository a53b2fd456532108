"""Failure alerts: a real SMTP server and a real HTTP webhook receiver on loopback.

The alert task is called in this process where a worker is not the point; a
real worker and a real beat process carry it where they are.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from django.utils import timezone

from operations import alert_transport, alerts, deferred, runner
from operations.celery_tasks import send_alert_summary, send_alerts
from operations.models import AlertDelivery, AlertRoute, JobRun
from operations.triage import fold_error
from tasks import metrics, tracker
from tasks.signals import task_finished
from tests.support.alerting import (
    BASE,
    SECRET_PATH,
    alert_env,
    http_receiver,
    queued,
    queued_alerts,
)
from tests.support.celery_processes import celery_process, wait_for
from tests.support.smtp_server import free_port, smtp_server
from tests.support.source_server import SAMPLE

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queue(settings) -> str:
    """A queue of this test's own: what the tracker's commit enqueued can be read there."""
    name = f"test-alerts-{uuid.uuid4().hex[:10]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = name
    settings.ALERT_QUEUE = f"{name}-alerts"
    settings.BEAT_LOCK_KEY = f"{name}-beat"
    # Delivery is the subject here: no run is retried, so a failure alerts at once (the
    # test of retried failures sets its own policy).
    settings.JOB_RETRY_POLICY = {}
    yield name
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(
        name,
        f"{name}-alerts",
        f"{name}-beat:lock",
        f"{name}-beat:last-run",
        f"{name}-beat:deferred",
    )
    for key in client.scan_iter(f"tasksite:{name}-alerts:*"):
        client.delete(key)


@pytest.fixture
def smtp(settings):
    with smtp_server() as server:
        server.configure(settings, backoff=0.01, retries=1)
        yield server


@pytest.fixture
def hook():
    with http_receiver() as receiver:
        yield receiver


@pytest.fixture
def routes(settings, smtp, hook, queue):
    """The default route from the environment: one address and one webhook."""
    settings.ALERT_EMAILS = ["ops@example.com"]
    settings.ALERT_WEBHOOK_URL = hook.url
    settings.ALERT_FROM_EMAIL = "Task status <tasks@example.com>"
    settings.PUBLIC_BASE_URL = BASE
    settings.ALERT_BACKOFF_SECONDS = 0.01
    settings.ALERT_MAX_RETRIES = 2
    settings.ALERT_TIMEOUT_SECONDS = 2
    return settings


def queue_of() -> str:
    return django_settings.ALERT_QUEUE


def failed_task(
    operation: str = "daily_sales",
    *,
    error: str = "sales source unusable: boom",
    errors: tuple[str, ...] = ("L03: export missing",),
    launched_by: str = "alice",
) -> str:
    handle = tracker.create_task(operation, launched_by=launched_by)
    for message in errors:
        handle.error(message)
    handle.fail(error)
    return handle.task_id


# -- tests -----------------------------------------------------------------------------


def test_a_failed_task_alerts_once_by_email_and_webhook_with_the_right_content(
    routes, smtp, hook, queue
):
    task_id = failed_task()
    # The tracker's commit enqueued the alert; nothing was sent by the writer itself.
    assert queued_alerts(queue) == [repr([task_id])]
    assert smtp.received == [] and hook.requests == []

    assert send_alerts(task_id) == 2

    [mail] = smtp.received
    assert mail.rcpt_tos == ("ops@example.com",)
    message = mail.message
    assert message["Subject"] == "[tasks] daily_sales failed"
    assert message["From"] == "Task status <tasks@example.com>"
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    for line in (
        "Daily sales processing (daily_sales) failed.",
        "Operation: Daily sales processing (daily_sales)",
        "Status: failed",
        f"Task: {task_id}",
        f"Link: {BASE}/tasks/{task_id}",
        "Launched by: alice",
        "Duration: 0 s",
        "Errors: 1",
        "Error: sales source unusable: boom",
    ):
        assert line in body, (line, body)

    [request] = hook.requests
    assert request["path"] == SECRET_PATH
    assert request["content_type"] == "application/json"
    [payload] = hook.bodies
    assert set(payload) == {"text"}
    assert f"Task: {task_id}" in payload["text"]
    assert f"{BASE}/tasks/{task_id}" in payload["text"]
    assert "Error: sales source unusable: boom" in payload["text"]

    deliveries = AlertDelivery.objects.filter(task_id=task_id)
    assert sorted(d.channel for d in deliveries) == ["email", "webhook"]
    assert {d.state for d in deliveries} == {"sent"}
    # The webhook's secret path is nowhere in what we store.
    assert all(SECRET_PATH not in d.destination + d.target for d in deliveries)


def test_a_rerun_of_the_alert_task_sends_nothing_again(routes, smtp, hook):
    task_id = failed_task()
    assert send_alerts(task_id) == 2
    assert send_alerts(task_id) == 0  # a redelivered message, a second run
    outcome = alerts.send_alerts(task_id)
    assert (outcome.sent, outcome.skipped) == (0, 2)
    # A claim held by another run ("sending") is not taken either.
    AlertDelivery.objects.filter(task_id=task_id, channel="email").update(state="sending")
    assert send_alerts(task_id) == 0
    assert len(smtp.received) == 1 and len(hook.requests) == 1


def test_a_completed_task_does_not_alert(routes, smtp, hook, queue):
    handle = tracker.create_task("daily_sales", launched_by="alice")
    handle.complete({"ok": True})
    assert queued_alerts(queue) == []
    assert send_alerts(handle.task_id) == 0
    assert smtp.received == [] and hook.requests == []
    assert not AlertDelivery.objects.exists()


def test_routes_per_operation_and_status_from_the_admin(settings, smtp, queue):
    settings.ALERT_EMAILS = []
    settings.ALERT_WEBHOOK_URL = ""
    settings.PUBLIC_BASE_URL = ""
    AlertRoute.objects.create(
        name="AP",
        operation="invoice_sync",
        emails="ap@example.com, both@example.com",
        on_completed_with_errors=False,
    )
    AlertRoute.objects.create(name="everyone", emails="all@example.com\nBoth@example.com")
    AlertRoute.objects.create(name="sales", operation="daily_sales", emails="sales@example.com")
    AlertRoute.objects.create(name="off", emails="off@example.com", enabled=False)

    handle = tracker.create_task("invoice_sync", launched_by="schedule")
    handle.error("vendor V9 unknown")
    handle.complete({})
    assert send_alerts(handle.task_id) == 2  # completed_with_errors: not the AP route
    assert sorted(m.rcpt_tos[0] for m in smtp.received) == ["Both@example.com", "all@example.com"]
    body = smtp.received[0].message.get_content()
    assert "Status: completed_with_errors" in body and "Link:" not in body
    assert "Error: vendor V9 unknown" in body

    failed = failed_task("invoice_sync")
    assert send_alerts(failed) == 3  # an address two routes name is sent to once
    assert sorted(m.rcpt_tos[0] for m in smtp.received[2:]) == [
        "all@example.com",
        "ap@example.com",
        "both@example.com",
    ]


def test_a_webhook_500_then_429_then_200_is_retried_by_the_task_not_in_place(routes, smtp, hook):
    hook.script = [(500, {}), (429, {"Retry-After": "90"})]
    task_id = failed_task()
    started = time.monotonic()
    # One try per run, nothing slept in the worker: the next try is deferred (no worker
    # holds its message), after the backoff or the receiver's Retry-After.
    assert send_alerts(task_id) == 1  # the email; the webhook's 500 deferred
    [(entry, due)] = deferred.pending("operations.send_alerts")
    assert entry["args"] == [task_id] and entry["retries"] == 1 and entry["queue"] == queue_of()
    assert send_alerts(task_id) == 0  # the 429
    [_, (entry, due)] = sorted(deferred.pending("operations.send_alerts"), key=lambda e: e[1])
    assert due - time.time() > 85  # Retry-After: 90
    assert time.monotonic() - started < 2
    assert send_alerts(task_id) == 1
    assert len(hook.requests) == 3 and len(smtp.received) == 1
    assert hook.bodies[0] == hook.bodies[2]
    delivery = AlertDelivery.objects.get(task_id=task_id, channel="webhook")
    assert (delivery.state, delivery.attempts) == ("sent", 3)
    assert send_alerts(task_id) == 0 and len(hook.requests) == 3


def test_the_retry_backoff_doubles_honours_retry_after_and_is_capped(settings):
    settings.ALERT_BACKOFF_SECONDS = 30
    settings.ALERT_BACKOFF_MAX_SECONDS = 3600
    for retries, low in ((0, 30), (1, 60), (3, 240)):
        assert low <= alert_transport.retry_countdown(retries) <= low * 1.25
    assert alert_transport.retry_countdown(0, retry_after=90) == 90
    assert alert_transport.retry_countdown(10) == 3600
    assert alert_transport.retry_countdown(0, retry_after=86400) == 3600


@pytest.mark.parametrize("trouble", ["down", "slow", "failing"])
def test_a_receiver_in_trouble_blocks_nothing_fails_nothing_and_is_logged(
    routes, smtp, hook, caplog, trouble
):
    down_port = free_port()
    if trouble == "down":
        routes.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{down_port}{SECRET_PATH}"
    elif trouble == "slow":
        hook.delay = 3
        routes.ALERT_TIMEOUT_SECONDS = 0.3
    else:
        hook.script = [(503, {})] * 10
    caplog.set_level(logging.INFO, logger="operations.alerts")

    started = time.monotonic()
    task_id = failed_task()  # the writer only enqueues: no wait on the receiver
    assert time.monotonic() - started < 1
    assert tracker.TaskHandle(tracker._load(task_id)).status == "failed"

    started = time.monotonic()
    assert send_alerts(task_id) == 1  # the email; the webhook tried again later, on its own
    assert len(deferred.pending("operations.send_alerts")) == 1
    assert time.monotonic() - started < 3, "bounded: one try of at most the timeout"
    assert len(smtp.received) == 1, "the email went out all the same"
    webhook = AlertDelivery.objects.get(task_id=task_id, channel="webhook")
    assert webhook.state == "failed" and webhook.attempts == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "operations.alerts"]
    assert any("not delivered" in line and "127.0.0.1" in line for line in logged), logged
    assert not any(SECRET_PATH in line for line in logged), "the webhook's secret is not logged"

    # The retry takes the failed delivery again, and only that one.
    hook.delay, hook.script = 0, []
    routes.ALERT_TIMEOUT_SECONDS = 2
    with http_receiver(down_port if trouble == "down" else 0) as back:
        assert send_alerts(task_id) == 1
        received = back.requests if trouble == "down" else hook.requests[-1:]
    assert len(received) == 1 and json.loads(received[0]["body"])["text"]
    assert len(smtp.received) == 1
    webhook.refresh_from_db()
    assert (webhook.state, webhook.attempts) == ("sent", 2)


def test_a_receiver_of_the_signal_that_raises_never_fails_the_tracker_write(caplog, queue):
    def broken(sender: Any, task: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    task_finished.connect(broken, dispatch_uid="test-broken")
    try:
        caplog.set_level(logging.ERROR, logger="tasks.signals")
        task_id = failed_task()
    finally:
        task_finished.disconnect(dispatch_uid="test-broken")
    assert tracker._load(task_id).status == "failed"
    assert any("receiver bug" in r.getMessage() for r in caplog.records)


def test_a_refused_webhook_is_not_retried(routes, smtp, hook):
    hook.script = [(404, {})]
    task_id = failed_task()
    assert send_alerts(task_id) == 1  # no next try: a 404 will not get better
    assert deferred.pending("operations.send_alerts") == []
    assert AlertDelivery.objects.get(task_id=task_id, channel="webhook").state == "refused"
    assert len(hook.requests) == 1


def test_a_personal_data_operation_s_alert_carries_no_error_text(routes, smtp, hook):
    task_id = failed_task(
        "transform_tips",
        error="employee E0042 (Jane Doe): no eligible hours",
        errors=("employee E0042 (Jane Doe): policy refused",),
    )
    assert send_alerts(task_id) == 2
    body = smtp.received[0].message.get_content()
    text = hook.bodies[0]["text"]
    for content in (body, text):
        assert "Error: details on the task page (personal data)" in content
        assert "Jane" not in content and "E0042" not in content
        assert "Errors: 1" in content and "Tips transformation (transform_tips)" in content


def test_worker_lost_and_stale_tasks_alert(routes, smtp, hook, queue):
    # The reaper: a run whose lease ran out.
    lost = tracker.create_task("daily_sales", launched_by="schedule").task_id
    JobRun.objects.create(
        task_id=lost,
        operation="daily_sales",
        worker="dead:1",
        lease_until=timezone.now() - timedelta(seconds=1),
    )
    assert runner.reap_lost_jobs() == 1
    # The stale check: a reporter that went silent.
    silent = tracker.create_task("invoice_sync", launched_by="bob").task_id
    assert tracker.fail_stale_tasks(now=time.time() + 901) >= 1
    assert sorted(queued_alerts(queue)) == sorted([repr([lost]), repr([silent])])

    assert send_alerts(lost) == 2 and send_alerts(silent) == 2
    bodies = {m.message["Subject"]: m.message.get_content() for m in smtp.received}
    assert (
        "Error: worker lost: dead:1 stopped renewing its lease"
        in bodies["[tasks] daily_sales failed"]
    )
    assert (
        "Error: no report for 15 min: its reporter went silent"
        in bodies["[tasks] invoice_sync failed"]
    )


def test_the_not_started_check_alerts_once_for_each_scheduled_run_no_worker_took(
    routes, smtp, hook
):
    stuck = tracker.create_task("daily_sales", launched_by="schedule").task_id
    taken = tracker.create_task("invoice_sync", launched_by="schedule").task_id
    runner.claim(taken, "invoice_sync", "busy:1")  # a worker has it
    tracker.create_task("get_mpvs", launched_by="alice")  # launched by a person
    now = time.time()

    assert alerts.check_not_started(now=now + 599) == 0
    assert alerts.check_not_started(now=now + 601) == 2  # one email, one webhook
    assert alerts.check_not_started(now=now + 661) == 0  # a minute later: once is enough
    [mail] = smtp.received
    assert mail.message["Subject"] == "[tasks] daily_sales: scheduled run not started"
    body = mail.message.get_content()
    assert "No worker took the scheduled run of daily_sales within 10 min." in body
    assert f"Task: {stuck}" in body and "Launched by: schedule" in body
    assert (
        "No worker took the scheduled run of daily_sales within 10 min." in (hook.bodies[0]["text"])
    )

    # When the stale check ends it, that is another event and it is told too.
    tracker.fail_stale_tasks(now=now + 901)
    assert send_alerts(stuck) == 2
    assert [m.message["Subject"] for m in smtp.received] == [
        "[tasks] daily_sales: scheduled run not started",
        "[tasks] daily_sales failed",
    ]


# -- real processes ----------------------------------------------------------------


@pytest.mark.slow
def test_a_job_failing_on_a_real_worker_alerts_through_it(smtp, hook, queue, tmp_path):
    from operations import services

    env = alert_env(queue, smtp, hook, SALES_SOURCE_URL=f"file://{tmp_path / 'nowhere'}")
    with celery_process("worker", env, tmp_path, "ready.") as worker:
        task_id = services.launch(
            "daily_sales",
            {"business_date": "2025-06-05"},
            request_id=f"alerts-{uuid.uuid4().hex[:6]}",
            user_label="alice",
        )
        wait_for(lambda: smtp.received and hook.requests, 30, "the alerts")
        time.sleep(1)  # nothing more comes
        log = worker.log_path.read_text(errors="replace")
    assert tracker._load(task_id).status == "failed"
    assert len(smtp.received) == 1 and len(hook.requests) == 1, log[-3000:]
    body = smtp.received[0].message.get_content()
    assert f"Task: {task_id}" in body and "Launched by: alice" in body
    assert "operations.send_alerts" in log


@pytest.mark.slow
def test_a_real_beat_alerts_a_scheduled_run_no_worker_took_without_any_worker(
    smtp, hook, queue, tmp_path
):
    stuck = tracker.create_task("daily_sales", launched_by="schedule").task_id
    env = alert_env(queue, smtp, hook, ALERT_NOT_STARTED_SECONDS="1", ALERT_CHECK_SECONDS="1")
    with celery_process("beat", env, tmp_path, "beat: Starting"):
        wait_for(lambda: smtp.received and hook.requests, 20, "the not-started alert")
        time.sleep(3)  # the check runs again, every second
    assert len(smtp.received) == 1 and len(hook.requests) == 1
    assert "scheduled run not started" in smtp.received[0].message["Subject"]
    assert (
        AlertDelivery.objects.filter(task_id=stuck, event="not_started", state="sent").count() == 2
    )
    # No worker was needed: the beat sent no message for it.
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    assert not any(b"alert_not_started" in raw for raw in client.lrange(queue, 0, -1))


# -- throttled per operation and reason ---------------------------------------------


def alerts_counted(outcome: str) -> float:
    from prometheus_client import REGISTRY

    metrics.get()
    return REGISTRY.get_sample_value("tasksite_alerts_total", {"outcome": outcome}) or 0.0


def test_the_same_failure_alerts_once_per_window_then_one_summary(routes, smtp, hook, queue):
    routes.ALERT_THROTTLE_SECONDS = 2
    before = {outcome: alerts_counted(outcome) for outcome in ("sent", "failed", "suppressed")}
    first = failed_task(error="L03: sales source unreachable after 4 attempts", errors=())
    assert send_alerts(first) == 2
    assert send_alerts(first) == 0  # its own retry is never held back, nor sent twice
    # The same failure with other ids and numbers: held back.
    second = failed_task(error="L07: sales source unreachable after 3 attempts", errors=())
    third = failed_task(error="L11: sales source unreachable after 12 attempts", errors=())
    assert send_alerts(second) == 0 and send_alerts(third) == 0
    assert send_alerts(third) == 0  # a redelivery counts once
    # Another reason, or another operation, is alerted at once.
    other = failed_task(error="invalid parameters: business_date", errors=())
    elsewhere = failed_task("get_mpvs", error="L03: sales source unreachable after 4 attempts")
    assert send_alerts(other) == 2 and send_alerts(elsewhere) == 2
    assert len(smtp.received) == 3

    # One summary, due when the window ends, waits on the alert queue.
    [summary] = queued(f"{queue}-alerts", "operations.send_alert_summary")
    assert summary["eta"], summary
    [reason] = eval(summary["argsrepr"])  # noqa: S307 (our own message's repr of one string)
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    wait_for(lambda: not client.exists(f"tasksite:{queue}-alerts:alert-throttle:{reason}"), 5, "")

    assert send_alert_summary(reason) == 2
    assert send_alert_summary(reason) == 0  # taken once
    mail = smtp.received[-1].message
    assert mail["Subject"] == "[tasks] daily_sales failed 2 more times"
    body = mail.get_content()
    assert "Daily sales processing (daily_sales) failed 2 more times since " in body
    assert "with the same error; those alerts were held back (one per 2 s)." in body
    assert f"Task: {third}" in body and "Held back: 2" in body
    assert "2 more times" in hook.bodies[-1]["text"]
    assert AlertDelivery.objects.filter(task_id=third, event="summary", state="sent").count() == 2
    assert not AlertDelivery.objects.filter(task_id=second).exists()

    # The window is over: the next one is alerted again.
    fourth = failed_task(error="L02: sales source unreachable after 1 attempts", errors=())
    assert send_alerts(fourth) == 2
    assert alerts_counted("sent") - before["sent"] == 10
    assert alerts_counted("suppressed") - before["suppressed"] == 4  # two tasks x two targets
    assert alerts_counted("failed") == before["failed"]


def test_folded_errors_keep_the_words_and_drop_what_varies():
    assert fold_error("L03: unreachable after 4 attempts (timed out after 30s)") == fold_error(
        "L12: unreachable after 2 attempts (timed out after 5s)"
    )
    assert fold_error("no sales data for 2025-06-10 at 04:30 in 'https://s.example.com/x?y=1'") == (
        "no sales data for <date> at <time> in <value>"
    )
    assert fold_error("task 0b7c2f7e-3c1a-4a51-9a43-5d8b2f0c1e22 lost") == "task <id> lost"
    assert fold_error("vendor V9 unknown") != fold_error("invalid parameters")
    assert fold_error(None) == ""


@pytest.mark.slow
def test_a_webhook_that_is_down_holds_no_job_and_is_retried_with_backoff(
    smtp, hook, queue, tmp_path
):
    from operations import services

    down_port = free_port()
    env = alert_env(
        queue,
        smtp,
        hook,
        ALERT_BACKOFF_SECONDS="2",
        # The watchdog's look sends the deferred next try.
        WATCHDOG_CHECK_SECONDS="0.5",
        SALES_SOURCE_URL=f"file://{SAMPLE / 'sales'}",
    )
    env["ALERT_WEBHOOK_URL"] = f"http://127.0.0.1:{down_port}{SECRET_PATH}"
    # One worker taking both queues, one job at a time (the worst case for a job).
    with celery_process("worker", env, tmp_path, "ready.") as worker:
        # No sales data for that date: it fails.
        failing = services.launch(
            "daily_sales", {"business_date": "2025-01-06"}, request_id=None, user_label="a"
        )
        wait_for(
            lambda: AlertDelivery.objects.filter(
                task_id=failing, channel="webhook", state="failed"
            ).exists(),
            30,
            "the first webhook attempt to fail",
        )
        began = time.monotonic()
        following = services.launch(
            "daily_sales", {"business_date": "2025-06-05"}, request_id=None, user_label="a"
        )
        wait_for(lambda: tracker._load(following).status not in ("started", "processing"), 30, "")
        ran_in = time.monotonic() - began
        assert tracker._load(following).status == "completed"
        webhook = AlertDelivery.objects.get(task_id=failing, channel="webhook")
        assert webhook.state == "failed", "the job ran before the alert's retry"
        with http_receiver(down_port) as back:
            wait_for(lambda: back.requests, 30, "the retried webhook")
        log = worker.log_path.read_text(errors="replace")
    assert ran_in < 10, (ran_in, log[-3000:])
    webhook.refresh_from_db()
    assert webhook.state == "sent" and webhook.attempts >= 2
    assert len(smtp.received) == 1
    assert "tried again in" in log


def test_a_failure_that_is_retried_alerts_only_when_the_last_attempt_fails(
    routes, smtp, hook, settings
):
    """No page at night for a source down five minutes: the retry's end is told instead."""
    from operations import retries

    settings.JOB_RETRY_POLICY = {"get_mpvs": (2, 60)}
    first = failed_task("get_mpvs")
    # Too soon to know whether a retry follows: asked again a little later, nothing sent.
    assert send_alerts(first) == 0
    [(entry, due)] = deferred.pending("operations.send_alerts")
    assert entry["args"] == [first] and 5 < due - time.time() <= 10
    retry = retries.schedule_retry(first)
    assert retry is not None
    assert send_alerts(first) == 0  # a retry follows: its own end is told
    assert smtp.received == [] and hook.requests == []
    # The retry fails too, and the policy is spent: that one alerts, at once.
    handle = tracker.TaskHandle(tracker._load(retry))
    handle.fail("sales source unusable: http://127.0.0.1/sales: HTTP 503 (gave up)")
    assert send_alerts(retry) == 2
    assert len(smtp.received) == 1 and retry in smtp.received[0].message.get_content()
    # A run with no retry policy alerts at once, as before.
    assert send_alerts(failed_task("invoice_sync")) == 2
