"""Real server processes for tests: daphne on a free port, and a reporter process.

The test process and its subprocesses share the test database (committed rows,
so tests that use them need ``transactional_db``) and Redis, on an updates
channel of their own so that parallel test workers never see each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

# The tests' free port and wait-for-HTTP: one definition, in deploy/net.py.
from bench._procs import stop as stop_process
from deploy.net import free_port as free_port
from deploy.net import wait_http as wait_http

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """A URL for the database the test process is using (the test database)."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def service_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tasksite.settings",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "TASK_UPDATES_CHANNEL": settings.TASK_UPDATES_CHANNEL,
            "TASK_STATUS_TTL": str(settings.TASK_STATUS_TTL),
            "SECRET_KEY": settings.SECRET_KEY,
            # The test servers speak plain HTTP on loopback: a client's cookie jar
            # would keep a Secure cookie to itself (production sends them Secure).
            "SESSION_COOKIE_SECURE": "0",
            "CSRF_COOKIE_SECURE": "0",
            "TASKSITE_QUIET_DEV_WARNING": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class Daphne:
    """A daphne process serving the project, as production runs it."""

    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"daphne-{self.port}.log"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/task-status"

    def start(self) -> Daphne:
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--websocket-max-message-size",
                "65536",
                "--access-log",
                "-",
                "tasksite.asgi:application",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.http}/healthz")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            stop_process(self.proc, 10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running_daphne(**extra_env: str) -> Iterator[Daphne]:
    server = Daphne(service_env(**extra_env)).start()
    try:
        yield server
    finally:
        server.stop()


def report(steps: list[list], *, env: dict[str, str] | None = None, timeout: float = 60) -> dict:
    """Run ``tests/support/reporter.py`` in its own process; returns what it printed."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "support" / "reporter.py"), json.dumps(steps)],
        cwd=ROOT,
        env=env or service_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"reporter failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def gunicorn(env: dict[str, str], log: Path, *, workers: int | None = None) -> Iterator[str]:
    """gunicorn as deploy/systemd/tasksite-web.service runs it (its config file), on a
    free port; its base URL once /healthz answers, stopped with SIGTERM after."""
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py")]
    if workers is not None:
        args += ["-w", str(workers)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*args, "--bind", f"127.0.0.1:{port}", "tasksite.wsgi:application"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", 30)
        yield base
    finally:
        stop_process(proc, 20)
