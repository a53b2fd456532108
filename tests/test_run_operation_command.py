"""``manage.py run_operation``, as an operator runs it in a terminal."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tasks.selectors import get_task
from tests.support.servers import ROOT
from tests.test_operations_celery import env_for

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
