"""The reporting API's rules, on the real database."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from django.db import connection
from django.test import override_settings

from tasks import selectors, tracker
from tasks.models import TaskStatus
from tests.support.servers import ROOT, service_env

pytestmark = pytest.mark.django_db


def stored(handle) -> TaskStatus:
    return TaskStatus.objects.get(pk=handle.task_id)


def test_a_new_task_is_started_at_version_1():
    with tracker.start_task("daily_sales", total=4) as task:
        row = stored(task)
        assert (row.status, row.version) == ("started", 1)
        assert row.progress == {"current": 0, "total": 4, "message": ""}
        task.complete()


def test_progress_shows_processing_and_raises_the_version():
    with tracker.start_task("invoice_sync", total=2) as task:
        task.progress(1, "first")
        row = stored(task)
        assert row.status == "processing"
        assert row.progress == {"current": 1, "total": 2, "message": "first"}
        assert row.version == 2
        task.complete({"ok": True})
    row = stored(task)
    assert (row.status, row.result, row.version) == ("completed", {"ok": True}, 3)
    assert row.progress["current"] == 1, "the last progress is kept after the end"


def test_an_error_then_progress_then_complete_ends_completed_with_errors():
    with tracker.start_task("daily_sales", total=2) as task:
        task.progress(1)
        task.error("store 7: file missing")
        assert stored(task).status == "error"
        time.sleep(0.11)
        task.progress(2)
        row = stored(task)
        assert row.status == "processing"
        assert row.error == "store 7: file missing", "error keeps the latest message"
        task.complete({"failed": ["store 7"]})
    row = stored(task)
    assert row.status == "completed_with_errors"
    assert row.error == "store 7: file missing"


def test_an_exception_escaping_the_block_fails_the_task_with_its_message():
    with pytest.raises(RuntimeError):
        with tracker.start_task("get_mpvs") as task:
            raise RuntimeError("the source is down")
    row = stored(task)
    assert (row.status, row.error) == ("failed", "the source is down")


def test_a_terminal_task_refuses_every_change_and_writes_nothing():
    with tracker.start_task("email_tips") as task:
        task.complete()
    version = stored(task).version
    for change in (
        lambda: task.progress(1),
        lambda: task.error("late"),
        lambda: task.complete(),
        lambda: task.fail("late"),
    ):
        with pytest.raises(tracker.TaskAlreadyFinished):
            change()
    # Another handle, as another process would hold, is refused too.
    other = tracker.TaskHandle(stored(task))
    with pytest.raises(tracker.TaskAlreadyFinished):
        other.fail("late")
    assert stored(task).version == version
    assert stored(task).status == "completed"


@pytest.mark.parametrize(
    ("current", "total"),
    [(-1, 5), (6, 5), ("3", 5), (1.5, 5), (True, 5), (1, -2), (1, 2**31), (2**31, 2**31)],
)
def test_bad_progress_is_refused_with_a_clear_error(current, total):
    with tracker.start_task("daily_sales", total=5) as task:
        with pytest.raises(tracker.InvalidProgress):
            task.progress(current, total=total)
        assert stored(task).version == 1
        task.complete()


def test_a_total_beyond_the_column_is_refused_at_creation_too():
    with pytest.raises(tracker.InvalidProgress):
        tracker.create_task("daily_sales", total=2**31)
    assert tracker.create_task("daily_sales", total=2**31 - 1).task_id


@pytest.mark.django_db(transaction=True)
def test_held_progress_the_database_refuses_is_logged_and_dropped_by_the_timer(caplog, monkeypatch):
    """The timer's thread logs what PostgreSQL refuses and never dies of it. The refusal is
    real: a CHECK constraint, for this test only, that no progress may be 2."""
    table = connection.ops.quote_name(TaskStatus._meta.db_table)
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    with connection.cursor() as cursor:
        cursor.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT refuse_two "
            "CHECK (progress_current IS DISTINCT FROM 2)"
        )
    try:
        with tracker.start_task("daily_sales", total=3) as task:
            task.progress(1, "one")
            task.progress(2, "two")  # held: within TASK_PROGRESS_MIN_INTERVAL of the last write
            time.sleep(0.4)
            assert stored(task).progress == {"current": 1, "total": 3, "message": "one"}
            task.progress(3, "three")
            task.complete()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT refuse_two")
    assert died == []
    assert "held progress dropped" in caplog.text
    row = stored(task)
    assert (row.status, row.progress["current"]) == ("completed", 3)


def test_nul_bytes_from_a_source_are_stored_as_replacement_characters():
    """PostgreSQL's text and JSON hold no NUL; a job reporting a source's data must not die."""
    with tracker.start_task("daily_sales", total=2) as task:
        task.progress(1, "L01\x00")
        task.error("bad row \x00 in L02")
        task.complete({"vendor\x00": ["Acme\x00", 1, 2.5, None, True]})
    row = stored(task)
    assert row.progress["message"] == "L01\ufffd"
    assert row.error == "bad row \ufffd in L02"
    assert row.result == {"vendor\ufffd": ["Acme\ufffd", 1, 2.5, None, True]}
    with tracker.start_task("daily_sales") as failing:
        failing.fail("gone\x00")
    assert stored(failing).error == "gone\ufffd"


@pytest.mark.parametrize("result", [{"x": float("nan")}, [float("inf")], {"when": {1, 2}}])
def test_a_result_json_cannot_carry_is_refused_in_the_job_s_call(result):
    task = tracker.create_task("daily_sales")
    with pytest.raises(tracker.InvalidResult):
        task.complete(result)
    assert stored(task).status == "started"  # nothing written


@pytest.mark.django_db(transaction=True)
def test_fast_progress_is_coalesced_and_the_latest_value_gets_out():
    """The timer that writes held progress runs in its own thread and connection."""
    with tracker.start_task("daily_sales", total=1000) as task:
        for i in range(1, 1001):
            task.progress(i, f"row {i}")
        writes_during_loop = stored(task).version - 1
        time.sleep(0.3)
        row = stored(task)
        assert row.progress == {"current": 1000, "total": 1000, "message": "row 1000"}
        task.complete()
    assert writes_during_loop <= 5, writes_during_loop


def test_held_progress_is_folded_into_the_final_change():
    with tracker.start_task("daily_sales", total=3) as task:
        task.progress(1)
        task.progress(3, "last")
        task.complete()
    row = stored(task)
    assert row.progress == {"current": 3, "total": 3, "message": "last"}
    assert row.version == 3


def test_cancel_stops_the_job_at_its_next_progress_step():
    handle = tracker.create_task("invoice_sync", total=10)
    tracker.request_cancel(handle.task_id, by="alice")
    with pytest.raises(tracker.TaskCancelled):
        with tracker.open_task(handle.task_id) as task:
            task.progress(1)
    row = TaskStatus.objects.get(pk=handle.task_id)
    assert (row.status, row.error) == ("failed", "cancelled by alice")


def test_cancelling_a_finished_task_is_refused():
    with tracker.start_task("get_mpvs") as task:
        task.complete()
    with pytest.raises(tracker.TaskAlreadyFinished):
        tracker.request_cancel(task.task_id, by="bob")


@override_settings(TASK_STATUS_TTL=1)
def test_an_expired_task_disappears_from_every_read_before_the_purge():
    with tracker.start_task("daily_sales") as task:
        task.complete()
    assert selectors.get_task(task.task_id) is not None
    time.sleep(1.1)
    assert selectors.get_task(task.task_id) is None
    assert selectors.list_tasks() == []
    assert selectors.changed_since(0, everything=True) == []
    assert TaskStatus.objects.filter(pk=task.task_id).exists(), "still stored until purged"


def test_the_purge_removes_only_expired_rows_in_batches():
    keep = tracker.create_task("daily_sales")
    with override_settings(TASK_STATUS_TTL=-1):
        for _ in range(25):
            tracker.create_task("invoice_sync")
    assert tracker.purge_expired(batch_size=10) == 25
    assert list(TaskStatus.objects.values_list("pk", flat=True)) == [
        TaskStatus.objects.get(pk=keep.task_id).pk
    ]


RACER = """
import os, sys, django
sys.path.insert(0, {root!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "tasksite.settings"
django.setup()
from tasks.models import TaskStatus
from tasks.tracker import TaskHandle
handle = TaskHandle(TaskStatus.objects.get(pk={task_id!r}))
for i in range(1, {count} + 1):
    handle._pending = (i, 1000, "{name}")
    handle._write(lambda task: None)
print("done")
"""


@pytest.mark.django_db(transaction=True)
def test_processes_writing_one_task_lose_no_update_and_none_starves():
    """Three processes race on one task, one of them with four times the work.

    The busy writer's one-statement fast path wins most races; the others must
    still get every change through (an optimistic retry loop alone once gave up
    after 50 misses in a row), and ``version`` must count every change.
    """
    handle = tracker.create_task("daily_sales", total=1000)
    counts = {"a": 400, "b": 100, "c": 100}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RACER.format(root=str(ROOT), task_id=handle.task_id, name=name, count=count),
            ],
            env=service_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, count in counts.items()
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
    row = TaskStatus.objects.get(pk=handle.task_id)
    assert row.version == 1 + sum(counts.values())
    # The last write of all is some writer's last: its own final count and name.
    assert (row.progress_message, row.progress_current) in counts.items()
