"""Real Celery worker and beat processes on Redis and PostgreSQL.

Each test gets its own queue and beat lock key, so parallel test runs and other
suites sharing the Redis never consume each other's messages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from operations import registry, services
from operations.models import DailySalesSummary, JobRun
from operations.services import enqueue
from tasks import tracker
from tasks.selectors import get_task
from tests.support.celery_processes import celery_process, env_for, terminal, wait_for
from tests.support.servers import ROOT
from tests.support.source_server import SAMPLE, source_server
from tests.support.watch import launch_and_watch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def sources(settings, tmp_path):
    settings.SALES_SOURCE_URL = f"file://{SAMPLE / 'sales'}"
    settings.INVOICE_SOURCE_URL = f"file://{SAMPLE / 'invoices'}"
    settings.ACCOUNTING_TARGET_URL = f"file://{tmp_path / 'accounting'}"


def test_job_launched_over_rest_runs_on_a_worker(queue, sources, runner, tmp_path):
    from rest_framework.test import APIClient

    from tasks.auth.bearer import issue_local_token
    from tests.test_operations_daily_sales import expected

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_local_token(runner)}")
    with celery_process("worker", env_for(queue), tmp_path, "ready."):
        response = client.post(
            "/task-status",
            {"operation": "daily_sales", "params": {"business_date": "2025-06-05"}},
            format="json",
        )
        assert response.status_code == 202, response.content
        task = terminal(response.json()["task_id"])
    assert task.status == "completed", task.error
    rows = DailySalesSummary.objects.filter(business_date="2025-06-05")
    assert rows.count() == 12
    assert sum(round(r.net_sales * 100) for r in rows) == sum(
        expected(date(2025, 6, 5), r.location_id)["net_sales"] for r in rows
    )
    assert JobRun.objects.get(task_id=task.task_id).outcome == "completed"


def test_killed_worker_ends_the_task_worker_lost_and_it_is_not_rerun(
    settings, queue, sources, tmp_path
):
    with source_server() as server:
        settings.SALES_SOURCE_URL = f"{server.base}/sales"
        for n in range(1, 13):
            server.fail(f"location=L{n:02d}", "slow:1")
        env = env_for(queue, SOURCE_TOKEN="test-token", SOURCE_TIMEOUT_SECONDS="10")
        task_id = services.launch(
            "daily_sales",
            {"business_date": "2025-06-04"},
            request_id="kill-test",
            user_label="test",
        )
        with celery_process("worker", env, tmp_path, "ready.") as worker:
            wait_for(
                lambda: (t := get_task(task_id)) and (t.progress_current or 0) >= 1,
                30,
                "the job to make progress",
            )
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(10)
        running = get_task(task_id)
        assert running.status in ("processing", "error")
        # acks_late: the message of the killed job is still unacknowledged in Redis.
        unacked = redis.Redis.from_url(settings.REDIS_URL).hgetall("unacked")
        assert any(task_id in raw.decode(errors="replace") for raw in unacked.values())
        started = time.monotonic()
        beat_env = {**env, "WORKER_LOST_CHECK_SECONDS": "1"}
        with (
            celery_process("worker", beat_env, tmp_path, "ready."),
            celery_process("beat", beat_env, tmp_path, "beat: Starting"),
        ):
            task = terminal(task_id, timeout=20)
            elapsed = time.monotonic() - started
            assert task.status == "failed" and task.error.startswith("worker lost"), task.error
            assert elapsed < 15
            # The redelivery (simulated: the same message again) does not run the job again.
            version = task.version
            enqueue("daily_sales", task_id, {"business_date": "2025-06-04", "locations": []})
            time.sleep(2)
    after = get_task(task_id)
    assert after.version == version and after.status == "failed"
    assert JobRun.objects.get(task_id=task_id).outcome == "worker lost"


def test_duplicate_delivery_while_running_is_ignored(queue, sources):
    from operations import runner

    clean = registry.validate_params(
        "daily_sales", {"business_date": "2025-06-07", "locations": ["L01"]}
    )
    handle = tracker.create_task("daily_sales", params=clean)
    JobRun.objects.create(
        task_id=handle.task_id,
        operation="daily_sales",
        worker="other:1",
        lease_until=timezone.now() + timedelta(seconds=30),
    )
    assert runner.run_task("daily_sales", handle.task_id, clean) == "skipped"
    assert get_task(handle.task_id).status == "started"


def test_expired_lease_on_redelivery_fails_worker_lost(queue, sources):
    from operations import runner

    clean = registry.validate_params("daily_sales", {"business_date": "2025-06-07"})
    handle = tracker.create_task("daily_sales", params=clean)
    JobRun.objects.create(
        task_id=handle.task_id,
        operation="daily_sales",
        worker="dead:1",
        lease_until=timezone.now() - timedelta(seconds=1),
    )
    assert runner.run_task("daily_sales", handle.task_id, clean) == "skipped"
    task = get_task(handle.task_id)
    assert task.status == "failed" and "worker lost" in task.error


def test_a_task_cancelled_in_the_queue_ends_now_and_never_runs(queue, sources, tmp_path):

    task_id = services.launch(
        "daily_sales",
        {"business_date": "2025-06-06"},
        request_id="cancel-queued",
        user_label="test",
    )
    assert [m["headers"]["id"] for m in _queued(queue)] == [task_id]
    task = services.cancel_task(task_id, by="alice")
    assert task.status == "failed", "no worker has it: it ends at once, not at a next step"
    assert task.error == "cancelled by alice before it started"
    assert JobRun.objects.get(task_id=task_id).outcome == "cancelled"
    with pytest.raises(tracker.TaskAlreadyFinished):
        services.cancel_task(task_id, by="bob")
    with celery_process("worker", env_for(queue), tmp_path, "ready.") as worker:
        wait_for(
            lambda: "already ran (cancelled)" in worker.log_path.read_text(errors="replace"),
            30,
            "the worker to receive the message and acknowledge it",
        )
    after = get_task(task_id)
    assert (after.version, after.status, after.error) == (task.version, "failed", task.error)
    assert not DailySalesSummary.objects.filter(business_date="2025-06-06").exists()
    assert _queued(queue) == []


def test_a_running_task_cancelled_stops_at_its_next_step(queue, sources):
    from operations import runner

    clean = registry.validate_params("daily_sales", {"business_date": "2025-06-07"})
    handle = tracker.create_task("daily_sales", params=clean)
    runner.claim(handle.task_id, "daily_sales", "busy:1")
    task = services.cancel_task(handle.task_id, by="alice")
    assert (task.status, task.cancel_requested_by) == ("started", "alice")
    assert JobRun.objects.get(task_id=handle.task_id).finished_at is None
    with pytest.raises(tracker.TaskCancelled), tracker.open_task(handle.task_id) as job:
        job.progress(1, "next step")
    assert get_task(handle.task_id).error == "cancelled by alice"


def _queued(queue: str) -> list[dict]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


def test_a_second_beat_sends_nothing_until_the_first_dies(queue, sources, tmp_path):
    env = env_for(queue, PURGE_SCHEDULE_SECONDS="1", BEAT_LOCK_TTL_SECONDS="2")
    with celery_process("beat", env, tmp_path, "beat: Starting") as first:
        time.sleep(1)
        with celery_process("beat", env, tmp_path, "beat: Starting"):
            start = len(_queued(queue))
            time.sleep(6)
            during = len(_queued(queue)) - start
            # One beat: about six purges in six seconds; two would send about twelve.
            assert 4 <= during <= 8, during
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            time.sleep(3)  # the lock expires after 2 s; the standby takes over
            before = len(_queued(queue))
            time.sleep(4)
            after = len(_queued(queue)) - before
            assert 2 <= after <= 6, after
    tasks = [m["headers"]["task"] for m in _queued(queue)]
    assert set(tasks) == {"operations.purge"}


def test_beat_schedule_fires_the_purge_which_removes_only_expired_rows(
    settings, queue, sources, tmp_path
):
    settings.TASK_STATUS_TTL = -60
    expired = tracker.create_task("daily_sales").task_id
    settings.TASK_STATUS_TTL = 3600
    alive = tracker.create_task("daily_sales").task_id
    from tasks.models import TaskStatus

    env = env_for(queue, PURGE_SCHEDULE_SECONDS="1")
    with (
        celery_process("worker", env, tmp_path, "ready."),
        celery_process("beat", env, tmp_path, "beat: Starting"),
    ):
        wait_for(lambda: not TaskStatus.objects.filter(pk=expired).exists(), 20, "the purge")
    assert TaskStatus.objects.filter(pk=alive).exists()


def test_embedded_worker_runs_a_launched_job_without_redis(sources, tmp_path):
    """``make run`` without REDIS_URL: launch, then the in-process Celery worker runs it."""
    script = (
        "import django, json, time\n"
        "django.setup()\n"
        "from operations.embedded import start_embedded_worker, stop_embedded_worker\n"
        "from operations.services import launch\n"
        "from tasks.selectors import get_task\n"
        "start_embedded_worker()\n"
        "tid = launch('daily_sales', {'business_date': '2025-06-08', 'locations': ['L05']},"
        " request_id='embedded', user_label='test')\n"
        "for _ in range(300):\n"
        "    t = get_task(tid)\n"
        "    if t.is_terminal: break\n"
        "    time.sleep(0.1)\n"
        "stop_embedded_worker()\n"
        "print(json.dumps({'status': t.status, 'result': t.result, 'error': t.error}))\n"
    )
    env = env_for("unused", REDIS_URL="")
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "completed", outcome
    assert outcome["result"]["summarised"] == ["L05"]
    assert DailySalesSummary.objects.filter(business_date="2025-06-08", location_id="L05").exists()


def test_a_websocket_client_sees_a_worker_run_job_in_order(queue, sources, runner, tmp_path):
    """Launched over HTTP on daphne, run by a worker process, watched over WebSocket."""

    from tasks.auth.bearer import issue_local_token
    from tests.support.servers import Daphne

    token = issue_local_token(runner)
    env = env_for(queue)
    server = Daphne(env).start()
    try:
        with celery_process("worker", env, tmp_path, "ready."):
            seen = launch_and_watch(server, token, "daily_sales", {"business_date": "2025-06-10"})
    finally:
        server.stop()
    statuses = [p["status"] for p in seen]
    assert statuses[0] == "started"
    assert statuses[-1] == "completed_with_errors"
    assert "error" in statuses and "processing" in statuses
    versions = [p["version"] for p in seen]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert "L07" in json.dumps(seen[-1]["result"])
