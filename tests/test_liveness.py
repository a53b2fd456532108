"""Every task has a liveness bound, and a reporter rides out a short database outage.

Reporters run in processes of their own; the database goes away for real
(a TCP proxy in front of PostgreSQL that the test cuts). Nothing is mocked.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db import connection, transaction

from operations import services
from tasks import tracker
from tasks.models import TaskStatus
from tests.support.celery_processes import celery_process, env_for, terminal
from tests.support.servers import database_url, report, service_env
from tests.support.source_server import source_server
from tests.support.tcp_proxy import tcp_proxy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def status_of(task_id: str) -> TaskStatus:
    return TaskStatus.objects.get(pk=task_id)


def test_a_silent_task_ends_failed_after_the_bound_and_a_finished_one_is_left_alone():
    silent = tracker.create_task("daily_sales", total=3)
    silent.progress(1, "one")
    done = tracker.create_task("daily_sales")
    done.complete({"ok": True})
    now = time.time()

    assert tracker.fail_stale_tasks(now=now + 899) == 0
    assert tracker.fail_stale_tasks(now=now + 901) == 1
    row = status_of(silent.task_id)
    assert row.status == "failed"
    assert row.error.startswith("no report for 15 min")
    assert row.progress_current == 1  # what it reported is kept
    assert status_of(done.task_id).status == "completed"
    assert tracker.fail_stale_tasks(now=now + 2000) == 0  # once is enough


def test_a_heartbeat_keeps_a_task_alive_without_changing_it(settings):
    settings.TASK_STALE_SECONDS = 2
    beating = tracker.create_task("daily_sales")
    time.sleep(1.5)
    beating.beat()  # a sign of life in the middle of a long step
    time.sleep(1)
    assert tracker.fail_stale_tasks() == 0  # last write 2.5 s ago, but a beat 1 s ago
    row = status_of(beating.task_id)
    assert (row.version, row.status) == (1, "started")  # a beat is not a change
    time.sleep(1.5)
    assert tracker.fail_stale_tasks() == 1


def test_the_bound_is_per_operation(settings):
    settings.TASK_STALE_SECONDS_BY_OPERATION = {"invoice_sync": 3600}
    slow = tracker.create_task("invoice_sync")
    quick = tracker.create_task("daily_sales")
    now = time.time()
    assert tracker.fail_stale_tasks(now=now + 901) == 1
    assert status_of(quick.task_id).status == "failed"
    assert status_of(slow.task_id).status == "started"  # invoice_sync may be quiet an hour
    assert tracker.fail_stale_tasks(now=now + 3601) == 1
    assert status_of(slow.task_id).error.startswith("no report for 1 h")


def test_an_open_handle_beats_while_its_process_lives(settings):
    """A reporter in its own process, asleep in a long step, is not taken for dead: the
    reaper runs when its last write is well past the bound, so only the heartbeats of
    its handle can keep it alive (with TASK_HEARTBEAT_SECONDS=1000 this test fails)."""
    settings.TASK_STALE_SECONDS = 2
    env = service_env(TASK_HEARTBEAT_SECONDS="0.3")
    steps = [
        ["begin", "daily_sales", 2],
        ["progress", 1, "long step"],
        ["sleep", 8],
        ["progress", 2, "done"],
        ["complete", {"ok": True}],
    ]
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(report(steps, env=env)))
    thread.start()
    deadline = time.monotonic() + 30
    row = None
    while row is None or row.progress_current != 1:
        assert time.monotonic() < deadline, "the reporter never reported its long step"
        time.sleep(0.05)
        row = TaskStatus.objects.filter(operation="daily_sales").first()
    while time.time() < row.updated_at + settings.TASK_STALE_SECONDS + 1.5:
        time.sleep(0.1)
    silent = status_of(row.task_id)
    assert (silent.version, silent.progress_current) == (row.version, 1)  # no write since
    assert time.time() - silent.updated_at > settings.TASK_STALE_SECONDS + 1
    assert tracker.fail_stale_tasks() == 0
    thread.join(30)
    assert result["status"] == "completed"
    row = status_of(result["task_id"])
    assert row.status == "completed" and row.heartbeat_at is not None


def _through_proxy(proxy) -> str:
    url = database_url()
    port = urlsplit(url).port or 5432
    return url.replace(f":{port}/", f":{proxy.port}/")


@pytest.fixture
def proxy():
    parts = urlsplit(database_url())
    with tcp_proxy((parts.hostname or "127.0.0.1", parts.port or 5432)) as running:
        yield running


def test_a_reporter_rides_out_a_short_outage_and_its_final_state_lands(proxy, tmp_path: Path):
    go = tmp_path / "go"
    env = service_env(DATABASE_URL=_through_proxy(proxy), TRACKER_RETRY_SECONDS="30")
    steps = [
        ["begin", "get_mpvs", 3],
        ["progress", 1, "before"],
        ["wait_for_file", str(go)],
        ["progress", 2, "during: may be dropped"],
        ["error", "location L02: bad file"],
        ["progress", 3, "after"],
        ["complete", {"ok": True}],
    ]
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(report(steps, env=env)))
    thread.start()
    wait_for(
        lambda: TaskStatus.objects.filter(operation="get_mpvs", progress_current=1).exists(),
        20,
        "the reporter's step",
    )
    proxy.cut()
    go.touch()
    time.sleep(2)  # the reporter is now retrying its error() against a dead database
    proxy.restore()
    thread.join(60)
    row = status_of(result["task_id"])
    assert (row.status, row.result, row.error) == (
        "completed_with_errors",
        {"ok": True},
        "location L02: bad file",
    )
    assert row.progress_current == 3


def test_a_reporter_that_gives_up_is_failed_by_the_liveness_bound(proxy, tmp_path: Path):
    go = tmp_path / "go"
    env = service_env(DATABASE_URL=_through_proxy(proxy), TRACKER_RETRY_SECONDS="1")
    steps = [
        ["begin", "get_mpvs", 2],
        ["progress", 1, "before"],
        ["wait_for_file", str(go)],
        ["complete", {"never": "stored"}],
    ]
    failure: list[BaseException] = []

    def run() -> None:
        try:
            report(steps, env=env)
        except RuntimeError as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(
        lambda: TaskStatus.objects.filter(operation="get_mpvs", progress_current=1).exists(),
        20,
        "the reporter's step",
    )
    task_id = str(TaskStatus.objects.get(operation="get_mpvs").task_id)
    proxy.cut()
    go.touch()
    thread.join(60)
    assert failure and "DatabaseUnavailable" in str(failure[0])  # it gave up, and said why
    proxy.restore()
    assert status_of(task_id).status == "processing"  # nobody could record the end ...
    assert tracker.fail_stale_tasks(now=time.time() + 901) == 1  # ... the bound does
    assert status_of(task_id).error.startswith("no report for 15 min")


def test_a_worker_job_that_loses_its_database_says_so_not_worker_lost(proxy, settings, tmp_path):
    """A real worker: the database goes away mid-job for longer than a change may wait."""
    queue = f"test-dblost-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    with source_server() as server:
        server.fail("location=L03", "slow:3")  # a long step, during which the database goes
        env = env_for(
            queue,
            DATABASE_URL=_through_proxy(proxy),
            TRACKER_RETRY_SECONDS="1",
            TIMECLOCK_SOURCE_URL=f"{server.base}/timeclock",
            SOURCE_TOKEN=server.token,
        )
        settings.TIMECLOCK_SOURCE_URL = f"{server.base}/timeclock"
        settings.SOURCE_TOKEN = server.token
        with celery_process("worker", env, tmp_path, "ready."):
            task_id = services.launch(
                "get_mpvs",
                {"business_date": "2025-06-10", "locations": ["L01", "L02", "L03", "L04"]},
                request_id=None,
                user_label="test",
            )
            wait_for(
                lambda: any("location=L03" in path for _, path in server.requests),
                30,
                "the reporter's step",
            )
            proxy.cut()
            time.sleep(6)  # the job's next write fails, retries for 1 s and gives up
            proxy.restore()
            task = terminal(task_id, 60)
    assert task.status == "failed"
    assert "lost its database" in task.error and "worker lost" not in task.error


def _log(worker) -> str:
    return worker.log_path.read_text(errors="replace")


def _launch(operation: str = "daily_sales") -> str:
    return services.launch(
        operation, {"business_date": "2025-06-05"}, request_id=None, user_label="test"
    )


def test_a_worker_that_takes_a_job_while_the_database_is_down_runs_it_once_it_is_back(
    proxy, queue, sample_sources, tmp_path
):
    env = env_for(queue, DATABASE_URL=_through_proxy(proxy), JOB_DATABASE_WAIT_SECONDS="60")
    with celery_process("worker", env, tmp_path, "ready.") as worker:
        proxy.cut()
        task_id = _launch()
        wait_for(
            lambda: "lease not taken" in _log(worker), 20, "the reporter's step"
        )  # the claim waits ...
        proxy.restore()
        task = terminal(task_id, 60)  # ... and takes the lease once the database is back
    assert task.status == "completed", task.error


def test_a_worker_whose_database_stays_away_fails_the_job_with_that_reason(
    proxy, queue, sample_sources, tmp_path
):
    env = env_for(
        queue,
        DATABASE_URL=_through_proxy(proxy),
        JOB_DATABASE_WAIT_SECONDS="3",
        TRACKER_RETRY_SECONDS="1",
    )
    with celery_process("worker", env, tmp_path, "ready.") as worker:
        proxy.cut()
        task_id = _launch()
        wait_for(
            lambda: "lost its database" in _log(worker), 20, "the reporter's step"
        )  # the claim gave up
        proxy.restore()
        task = terminal(task_id, 60)
    assert task.status == "failed"
    assert "lost its database" in task.error and "worker lost" not in task.error


def test_a_database_that_drops_the_failure_write_too_still_gets_the_reason_recorded(
    queue, sample_sources, tmp_path
):
    """Reads answer, writes of the task fail (a row lock past lock_timeout): the job's
    last change and then its failure each raise ``DatabaseUnavailable``."""
    task_id = _launch()  # queued: no worker reads the queue yet
    held, release = threading.Event(), threading.Event()

    def hold_the_row() -> None:
        try:
            with transaction.atomic():
                TaskStatus.objects.select_for_update().get(pk=task_id)
                held.set()
                release.wait(60)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    try:
        assert held.wait(10)
        env = env_for(
            queue,
            PGOPTIONS="-c lock_timeout=200",
            TRACKER_RETRY_SECONDS="0.5",
            JOB_DATABASE_WAIT_SECONDS="60",
        )
        with celery_process("worker", env, tmp_path, "ready.") as worker:
            wait_for(lambda: "lost its database" in _log(worker), 30, "the reporter's step")
            gave_up = _log(worker).index("lost its database")
            # Two retried writes since: the first try to record the failure gave up
            # (DatabaseUnavailable) before the database "comes back".
            wait_for(
                lambda: _log(worker)[gave_up:].count("database unreachable") >= 2,
                30,
                "the reporter's step",
            )
            release.set()
            task = terminal(task_id, 60)
    finally:
        release.set()
        holder.join(10)
    assert task.status == "failed"
    assert "lost its database" in task.error, task.error
