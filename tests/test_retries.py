"""Retries you can see: a run that failed for a passing reason is run again as a new task.

A real worker against a real HTTP source on loopback that is down for the first
two runs; the chain of tasks, the pages and the cancel of a pending retry.
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from operations import deferred, retries, runner, services
from operations.jobs import JobFailed
from operations.models import JobRun
from operations.sources import SourceError, SourceUnavailable
from tasks import tracker
from tasks.models import TaskStatus
from tests.support.celery_processes import celery_process, env_for, wait_for
from tests.support.source_server import source_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queue(settings):
    name = f"test-retries-{uuid.uuid4().hex[:10]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = name
    settings.ALERT_QUEUE = f"{name}-alerts"
    settings.BEAT_LOCK_KEY = f"{name}-beat"
    yield name
    redis.Redis.from_url(settings.REDIS_URL).delete(name, f"{name}-alerts", f"{name}-beat:deferred")


def failed(operation: str, *, launched_by: str = "alice", rerun_of: str | None = None) -> str:
    handle = tracker.create_task(operation, launched_by=launched_by, params={}, rerun_of=rerun_of)
    handle.fail("sales source unusable: http://127.0.0.1/sales: HTTP 503 (gave up)")
    return handle.task_id


def test_what_counts_as_a_passing_reason():
    down = SourceUnavailable("sales: HTTP 503 (gave up after 5 attempts)")
    try:
        try:
            raise down
        except SourceError as exc:
            raise JobFailed(f"sales source unusable: {exc}") from exc
    except JobFailed as exc:
        assert runner.is_transient(exc)
    assert not runner.is_transient(JobFailed("no sales data for 2025-01-06"))
    assert not runner.is_transient(SourceError("credentials refused (HTTP 401)"))


def test_a_pending_retry_is_shown_on_the_failed_page_and_cancelled_with_one_button(
    settings, queue, client, admin_user
):
    settings.JOB_RETRY_POLICY = {"get_mpvs": (2, 60)}
    first = failed("get_mpvs")
    retry = retries.schedule_retry(first)
    assert retry is not None and retries.schedule_retry(first) == retry  # once
    task = TaskStatus.objects.get(pk=retry)
    assert (str(task.rerun_of), task.launched_by, task.status) == (first, "retry", "started")
    # Its job is not sent yet (no countdown message a worker would hold): it is deferred,
    # and the watchdog's look sends it once it is due, once.
    store = redis.Redis.from_url(settings.REDIS_URL)
    assert store.lrange(queue, 0, -1) == []
    [(entry, due)] = deferred.pending("operations.get_mpvs")
    assert (entry["task_id"], entry["unless_finished"], entry["queue"]) == (retry, retry, queue)
    assert 55 < due - time.time() <= 60
    assert deferred.send_due(now=due - 1) == 0 and store.lrange(queue, 0, -1) == []

    client.force_login(admin_user)
    page = client.get(f"/tasks/{first}").content.decode()
    assert 'data-field="retry">Retry 2 of 2 at ' in page
    assert f'<a href="/tasks/{retry}">task {retry[:8]}</a>' in page
    assert "Cancel retry" in page
    page = client.get(f"/tasks/{retry}").content.decode()
    assert f'data-field="repeats">Retry 2 of 2 of <a href="/tasks/{first}">' in page

    response = client.post(f"/tasks/{first}/cancel-retry")
    assert response.status_code == 302 and response["Location"] == f"/tasks/{first}"
    task.refresh_from_db()
    assert task.status == "failed" and "cancelled by admin before it started" in task.error
    # Due now, but cancelled: dropped, never sent.
    assert deferred.send_due(now=due + 1) == 0
    assert store.lrange(queue, 0, -1) == [] and deferred.pending() == []
    # A worker that gets the message later finds the run over and only acknowledges it.
    assert JobRun.objects.get(task_id=retry).outcome == "cancelled"
    page = client.get(f"/tasks/{first}").content.decode()
    assert "Cancel retry" not in page and "Retry 2 of 2: " in page
    # The policy is spent: a failed retry is not retried again.
    assert retries.schedule_retry(retry) is None


def test_no_retry_without_a_policy_and_never_for_email_tips(settings, queue):
    settings.JOB_RETRY_POLICY = {"get_mpvs": (3, 60)}
    assert retries.schedule_retry(failed("email_tips")) is None
    assert retries.schedule_retry(failed("invoice_sync")) is None
    ok = tracker.create_task("get_mpvs", launched_by="alice")
    ok.complete({})
    assert retries.schedule_retry(ok.task_id) is None  # only a failed run


@pytest.mark.slow
def test_a_run_failing_for_a_passing_reason_is_retried_on_a_real_worker(settings, queue, tmp_path):
    with source_server() as server:
        # The sales source is down for the first two runs (each gives up after 1 try).
        server.fail("/sales/locations", "500")
        server.fail("/sales/locations", "500")
        env = env_for(
            queue,
            SALES_SOURCE_URL=f"{server.base}/sales",
            SOURCE_TOKEN="test-token",
            SOURCE_MAX_RETRIES="0",
            JOB_RETRY_POLICY="daily_sales=3:1",
            # The watchdog's look sends the retries that are due.
            WATCHDOG_CHECK_SECONDS="0.5",
        )
        first = services.launch(
            "daily_sales", {"business_date": "2025-06-05"}, request_id="retry", user_label="alice"
        )
        with celery_process("worker", env, tmp_path, "ready.") as worker:
            last = wait_for(
                lambda: TaskStatus.objects.filter(
                    launched_by="retry", status="completed", operation="daily_sales"
                ).first(),
                60,
                "the third attempt to complete",
            )
            log = worker.log_path.read_text(errors="replace")
    second = TaskStatus.objects.get(pk=last.rerun_of)
    assert str(second.rerun_of) == first and second.status == "failed"
    assert TaskStatus.objects.get(pk=first).status == "failed"
    assert "HTTP 500" in second.error
    assert retries.attempt_of(last) == 3
    assert retries.chain(TaskStatus.objects.get(pk=first))["retry"]["task_id"] == str(
        second.task_id
    )
    assert retries.chain(last)["repeats"] == {"task_id": str(second.task_id), "attempt": 3, "of": 3}
    assert "retry 2 of 3" in log and "retry 3 of 3" in log
