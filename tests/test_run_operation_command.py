"""``manage.py run_operation``, as an operator runs it in a terminal."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tasks.selectors import get_task
from tasks.serializers import task_document
from tests.support.celery_processes import env_for
from tests.support.servers import ROOT, service_env
from tests.support.source_server import SAMPLE

pytestmark = pytest.mark.django_db(transaction=True)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_on_a_queued_run_cancels_it_through_the_service_and_exits(tmp_path):
    """No worker takes the queue: the cancel must end the queued task at once, not hang."""
    queue = f"test-command-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_operation",
            "--queue",
            "daily_sales",
            "--business_date=2025-06-05",
        ],
        cwd=ROOT,
        env=env_for(queue),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # As in a terminal: pytest-xdist's workers ignore SIGINT, and an ignored signal is
        # inherited, so Python would install no KeyboardInterrupt for Ctrl-C.
        preexec_fn=_default_sigint,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"task ([0-9a-f-]{36})", line)
        assert found, line
        task_id = found.group(1)
        time.sleep(0.5)  # watching
        proc.send_signal(signal.SIGINT)
        output = line + proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "cancel requested" in output, output
    assert proc.returncode == 1, output  # it failed: cancelled
    task = get_task(task_id)
    assert task is not None and task.status == "failed"
    assert "cancel" in (task.error or "").lower(), task.error


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        (["--business_date=2025-06-05", "--locations=L01"], "completed", 0),
        (["--business_date=2025-01-01", "--locations=L01"], "failed", 1),
    ],
)
def test_the_last_line_is_the_task_as_json_and_a_failure_exits_1(tmp_path, params, status, code):
    """For a script or cron: `run_operation ... | tail -n 1 | jq .result`."""
    env = service_env(SALES_SOURCE_URL=f"file://{SAMPLE / 'sales'}")
    done = subprocess.run(
        [sys.executable, "manage.py", "run_operation", "daily_sales", *params],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == code, done.stdout + done.stderr
    document = json.loads(done.stdout.strip().splitlines()[-1])
    assert document["status"] == status
    assert document == task_document(get_task(document["task_id"]))
    if status == "completed":
        assert document["result"]["locations"] == 1 and document["result"]["failed_locations"] == {}
    else:
        assert done.stderr.strip().endswith(document["error"])
