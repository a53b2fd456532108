"""A database that accepts connections and never answers is a fast 503, not a hang.

Real gunicorn and daphne processes pointed at a loopback port that accepts and
then says nothing (a PostgreSQL host gone silent); real PostgreSQL for the
statement timeout of the web processes, which jobs and migrations do not get.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from email.message import Message
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.support.servers import ROOT, Daphne, gunicorn, service_env

CONNECT_TIMEOUT = 2


@contextmanager
def silent_port() -> Iterator[int]:
    """A TCP port on loopback that accepts every connection and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        for conn in held:
            conn.close()


def timed_get(url: str, token: str | None = None) -> tuple[int, Message, dict, float]:
    """Status, headers (case-insensitive: daphne sends them in lower case), body, seconds."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    began = time.monotonic()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=40) as r:
            status, head, body = r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        status, head, body = exc.code, exc.headers, exc.read()
    return status, head, json.loads(body or b"null"), time.monotonic() - began


@contextmanager
def web_server(kind: str, env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    if kind == "gunicorn":
        with gunicorn(env, tmp_path / "gunicorn.log", workers=1) as url:
            yield url
        return
    server = Daphne(env)
    server.log_path = tmp_path / "daphne.log"
    server.start()
    try:
        yield server.http
    finally:
        server.stop()


def silent_env(port: int) -> dict[str, str]:
    return service_env(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/tasks",
        DATABASE_CONNECT_TIMEOUT_SECONDS=str(CONNECT_TIMEOUT),
        # Every request looks its token up: nothing answers from a cache.
        API_TOKEN_CACHE_SECONDS="0",
    )


@pytest.mark.parametrize("kind", ["gunicorn", "daphne"])
def test_a_silent_database_is_a_fast_503_on_rest_and_readyz(kind, tmp_path):
    token = "tsk_" + "s" * 40
    with silent_port() as port, web_server(kind, silent_env(port), tmp_path) as url:
        status, headers, body, took = timed_get(f"{url}/task-status", token)
        assert status == 503, body
        assert headers["Retry-After"] == "5"
        assert "database is unavailable" in body["detail"]
        assert body["request_id"] == headers["X-Request-ID"]
        assert took < CONNECT_TIMEOUT + 3, took  # not gunicorn's 30 s

        status, headers, body, took = timed_get(f"{url}/readyz")
        assert status == 503 and headers["Retry-After"] == "5"
        assert body == {
            "status": "unavailable",
            "checks": {"database": "unavailable", "redis": "ok"},
        }
        assert took < CONNECT_TIMEOUT + 3, took


def test_concurrent_readyz_share_one_probe_of_a_silent_database(tmp_path):
    """daphne runs sync views one at a time: without the shared probe, N callers wait N timeouts."""
    callers = 4
    with silent_port() as port, web_server("daphne", silent_env(port), tmp_path) as url:
        began = time.monotonic()
        with ThreadPoolExecutor(callers) as pool:
            answers = list(pool.map(lambda _: timed_get(f"{url}/readyz"), range(callers)))
        took = time.monotonic() - began
    assert [a[0] for a in answers] == [503] * callers
    assert took < 2 * CONNECT_TIMEOUT + 2, took


def _statement_timeout(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    probe = (
        "from django.db import connection\n"
        "with connection.cursor() as c:\n"
        "    c.execute('SHOW statement_timeout'); print(c.fetchone()[0])\n"
        "    c.execute('SELECT pg_sleep(1.5)'); print('slept')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code + probe],
        cwd=ROOT,
        env=service_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("entry", ["tasksite.wsgi", "tasksite.asgi"])
def test_a_web_process_cancels_a_long_statement(entry):
    done = _statement_timeout(f"import {entry}\n", DATABASE_STATEMENT_TIMEOUT_MS="500")
    assert done.stdout.splitlines()[:1] == ["500ms"], done.stderr[-2000:]
    assert "slept" not in done.stdout
    assert "QueryCanceled" in done.stderr and "statement timeout" in done.stderr


def test_a_job_or_management_process_has_no_statement_timeout():
    setup = "import django; django.setup()\n"
    done = _statement_timeout(setup, DATABASE_STATEMENT_TIMEOUT_MS="500")
    assert done.stdout.split() == ["0", "slept"], done.stderr[-2000:]


@pytest.mark.django_db
def test_readyz_probes_the_database_at_most_once_per_cache_period(client, settings):
    settings.READYZ_CACHE_SECONDS = 0
    with CaptureQueriesContext(connection) as first:
        assert client.get("/readyz").status_code == 200
    settings.READYZ_CACHE_SECONDS = 60
    with CaptureQueriesContext(connection) as cached:
        for _ in range(5):
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    assert [q["sql"] for q in first.captured_queries] == ["SELECT 1"]
    assert cached.captured_queries == []
    assert ready["Cache-Control"] == "no-store"
