"""Real Celery workers and beats for the tests: each on a queue and beat lock of its
test's own, so parallel runs sharing one Redis never take each other's messages."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from tasks.selectors import get_task
from tests.support.servers import ROOT, service_env, stop_process
from tests.support.waiting import wait_for


def env_for(queue: str, **extra: str) -> dict[str, str]:
    values = dict(
        CELERY_QUEUE=queue,
        ALERT_QUEUE=f"{queue}-alerts",
        BEAT_LOCK_KEY=f"{queue}-beat",
        SALES_SOURCE_URL=settings.SALES_SOURCE_URL,
        INVOICE_SOURCE_URL=settings.INVOICE_SOURCE_URL,
        ACCOUNTING_TARGET_URL=settings.ACCOUNTING_TARGET_URL,
        JOB_HEARTBEAT_SECONDS="0.5",
        JOB_LEASE_SECONDS="2",
        # Nothing but what the test asks for fires during a test.
        PURGE_SCHEDULE_SECONDS="3600",
        WORKER_LOST_CHECK_SECONDS="3600",
        DAILY_SALES_SCHEDULE="0 0 1 1 *",
        INVOICE_SYNC_SCHEDULE="0 0 1 1 *",
    )
    return service_env(**{**values, **extra})


@contextmanager
def celery_process(
    kind: str,
    env: dict[str, str],
    tmp_path: Path,
    ready: str,
    *,
    pool: str = "solo",
    queues: str | None = None,
) -> Iterator[subprocess.Popen]:
    """A worker (``pool``: solo, or prefork as deploy/systemd runs it) or a beat process.

    A worker takes ``queues`` (comma-separated): by default the jobs' and the alerts'.
    """
    log_path = tmp_path / f"{kind}-{uuid.uuid4().hex[:6]}.log"
    args = [sys.executable, "-m", "celery", "-A", "tasksite", kind, "-l", "INFO"]
    if kind == "worker":
        args += [
            "--pool",
            pool,
            *(["--concurrency", "1"] if pool == "prefork" else []),
            "-Q",
            queues
            or ",".join(
                dict.fromkeys([env["CELERY_QUEUE"], env.get("ALERT_QUEUE") or env["CELERY_QUEUE"]])
            ),
            "-n",
            f"{uuid.uuid4().hex[:6]}@%h",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ]
    else:
        args += ["-s", str(tmp_path / "beat-schedule"), "--pidfile", ""]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_path  # type: ignore[attr-defined]
    try:
        wait_for(
            lambda: ready in log_path.read_text(errors="replace") or proc.poll() is not None,
            30,
            f"{kind} to start",
        )
        assert proc.poll() is None, log_path.read_text()
        yield proc
    finally:
        if proc.poll() is None:
            stop_process(proc, 15)


def terminal(task_id: str, timeout: float = 60):
    return wait_for(
        lambda: (t := get_task(task_id)) and t.is_terminal and t, timeout, f"task {task_id} to end"
    )
