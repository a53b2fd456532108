"""PostgreSQL and Redis stopped and started again under the whole running service.

The servers are this module's own (``tests/support/own_services.py``), stopped as an
operator stops them, under a daphne, a gunicorn, a Celery worker and reporting
processes that were given their addresses. The answers while a dependency is away
(503 with ``detail``, ``request_id`` and ``Retry-After``; a WebSocket close 4503), the
tasks' end states and reasons, and the recovery are read over REST, the WebSocket and
a direct connection to the database: nothing is mocked, and the test process's own
database is not involved. Starting the servers and the service costs more than a fault,
so every case shares one set.

No beat runs: its reaper may, by design, win the race against a job that records why
it stopped in the instant the database returns (docs/jobs.md, "When the database goes
away"), and these cases assert the job's own reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import websockets

from scripts import test_services
from tests.support.celery_processes import celery_process, env_for
from tests.support.own_services import (
    TERMINAL,
    Answer,
    HeldSource,
    LiveClient,
    OwnServers,
    call,
    handshake_close_code,
    held_source,
    own_servers,
    reporting,
)
from tests.support.servers import ROOT, Daphne, gunicorn, report, service_env
from tests.support.waiting import wait_for as wait_until

pytestmark = pytest.mark.slow

CLOSE_TRY_AGAIN_LATER = 4503
MPVS_ONE_LOCATION = {
    "operation": "get_mpvs",
    "params": {"business_date": "2025-06-10", "locations": ["L01"]},
}

# Migrations, and a user with the runner role and its API tokens, in the servers' database.
PREPARE = """
import json
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from tasks.auth.bearer import issue_local_token

call_command("migrate", interactive=False, verbosity=0)
user = User.objects.create_user("outage-runner")
user.groups.add(Group.objects.get_or_create(name=settings.TASK_RUNNER_ROLE)[0])
print(json.dumps([issue_local_token(user, name=f"outages {n}") for n in range(3)]))
"""


@dataclass
class Stack:
    servers: OwnServers
    folder: Path
    source: HeldSource
    daphne: Daphne
    web: str  # gunicorn's base URL
    worker: subprocess.Popen
    # tokens[0] is used throughout; the others are shown to no server before the first
    # case's outage, so authenticating them then needs the database.
    tokens: list[str]
    base_env: dict[str, str]

    def reporter_env(self, **extra: str) -> dict[str, str]:
        return service_env(**self.base_env, **extra)

    @property
    def logs(self) -> dict[str, Path]:
        return {
            "daphne": self.daphne.log_path,
            "gunicorn": self.folder / "gunicorn.log",
            "worker": Path(self.worker.log_path),  # type: ignore[attr-defined]
        }


def _prepare(env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", PREPARE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("outages")
    queue = f"outages-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as running:
        try:
            servers = running.enter_context(own_servers())
        except test_services.ServiceError as exc:
            pytest.fail(f"these tests stop servers of their own, which need: {exc}")
        source = running.enter_context(held_source())
        base_env = {
            "DATABASE_URL": servers.database_url,
            "REDIS_URL": servers.redis_url,
            "CELERY_QUEUE": queue,
            "TIMECLOCK_SOURCE_URL": f"{source.base}/timeclock",
            "SOURCE_TOKEN": source.token,
            "SOURCE_TIMEOUT_SECONDS": "60",
        }
        tokens = _prepare(service_env(**base_env))
        # As deploy/systemd/tasksite-ws@.service runs it.
        daphne = Daphne(service_env(**base_env, DB_CONN_MAX_AGE="0"))
        daphne.log_path = folder / "daphne.log"
        running.callback(daphne.stop)
        daphne.start()
        web = running.enter_context(
            gunicorn(service_env(**base_env, WEB_WORKERS="2"), folder / "gunicorn.log")
        )
        # A status change waits 1 s for the database, then the job gives up; it waits
        # far longer than any outage here to record why.
        worker_env = env_for(
            queue, **base_env, TRACKER_RETRY_SECONDS="1", JOB_DATABASE_WAIT_SECONDS="120"
        )
        worker = running.enter_context(celery_process("worker", worker_env, folder, "ready."))
        yield Stack(servers, folder, source, daphne, web, worker, tokens, base_env)


@pytest.fixture(autouse=True)
def logs_since_start(stack: Stack) -> Iterator[dict[str, int]]:
    """Where each service's log stood when the case began; the dependencies back after."""
    yield {name: path.stat().st_size for name, path in stack.logs.items()}
    stack.source.release()
    stack.servers.start_stopped()


def _log_since(path: Path, offset: int) -> str:
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def _assert_no_traceback(stack: Stack, since: dict[str, int], *names: str) -> None:
    for name in names:
        text = _log_since(stack.logs[name], since[name])
        assert "Traceback" not in text, f"{name}:\n{text[-5000:]}"


def _assert_try_again_later(name: str, answer: Answer, dependency: str) -> None:
    """A 503 a client can act on: JSON naming the dependency, its request id, Retry-After."""
    assert answer.status == 503, (name, answer.status, answer.body)
    assert isinstance(answer.body, dict), (name, answer.body)
    assert dependency in answer.body["detail"], (name, answer.body)
    assert answer.body["request_id"], name
    assert answer.body["request_id"] == answer.headers["X-Request-ID"], name
    retry_after = answer.headers.get("Retry-After") or ""
    assert retry_after.isdigit() and int(retry_after) > 0, (name, retry_after)


def _task(stack: Stack, task_id: str) -> dict:
    answer = call(stack.web, "GET", f"/task-status/{task_id}", stack.tokens[0])
    assert answer.status == 200, answer
    return answer.body


def _terminal(stack: Stack, task_id: str, timeout: float = 90) -> dict:
    def ended() -> dict | None:
        answer = call(stack.web, "GET", f"/task-status/{task_id}", stack.tokens[0])
        return answer.body if answer.status == 200 and answer.body["status"] in TERMINAL else None

    return wait_until(ended, timeout, f"task {task_id} to end")


def _reported(stack: Stack, operation: str, message: str) -> dict | None:
    """The task whose progress message is ``message`` (a reporter's marker), if it shows."""
    answer = call(stack.web, "GET", f"/task-status?operation={operation}", stack.tokens[0])
    assert answer.status == 200, answer
    return next((t for t in answer.body if (t["progress"] or {}).get("message") == message), None)


def _launch(stack: Stack, launch: dict) -> str:
    answer = call(stack.web, "POST", "/task-status", stack.tokens[0], launch)
    assert answer.status == 202, answer
    return answer.body["task_id"]


def _job_outcome(stack: Stack, task_id: str) -> str | None:
    """The worker's own record of how the run ended (None while it is not finished)."""
    with psycopg.connect(stack.servers.database_url, connect_timeout=10) as db:
        row = db.execute(
            "SELECT outcome FROM operations_jobrun WHERE task_id = %s AND finished_at IS NOT NULL",
            [task_id],
        ).fetchone()
    return row[0] if row else None


def _first(frames: list[dict], kind: str) -> dict | None:
    return next((frame for frame in frames if frame.get("type") == kind), None)


async def _caught_up(ws_url: str, token: str, since: int, task_id: str, timeout: float) -> dict:
    url = f"{ws_url}?access_token={token}&task_id={task_id}&since={since}"
    async with websockets.connect(url, open_timeout=timeout) as ws:
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if frame["type"] == "task_status" and frame["payload"]["status"] in TERMINAL:
                return frame["payload"]


def test_postgresql_stopped_rest_answers_503_the_websocket_4503_and_then_all_recover(
    stack: Stack, logs_since_start: dict[str, int]
) -> None:
    token, never_seen_by_web, never_seen_by_daphne = stack.tokens
    task_id = report([["start", "invoice_sync"]], env=stack.reporter_env())["task_id"]
    assert _task(stack, task_id)["status"] == "started"  # gunicorn holds a connection now
    with LiveClient(stack.daphne.ws, token) as live:
        stack.servers.postgres.stop()
        answers = {
            "read": call(stack.web, "GET", f"/task-status/{task_id}", token),
            "list": call(stack.web, "GET", "/task-status?operation=invoice_sync", token),
            "launch": call(stack.web, "POST", "/task-status", token, MPVS_ONE_LOCATION),
            "cancel": call(stack.web, "POST", f"/task-status/{task_id}/cancel", token),
            # Fails closed: a token that needs a lookup is neither let in nor refused.
            "unknown token": call(stack.web, "GET", f"/task-status/{task_id}", never_seen_by_web),
        }
        for name, answer in answers.items():
            _assert_try_again_later(name, answer, "database")
        ready = call(stack.web, "GET", "/readyz", token)
        assert ready.status == 503 and ready.body["checks"]["database"].startswith("unavailable")
        assert handshake_close_code(stack.daphne.ws, never_seen_by_daphne) == CLOSE_TRY_AGAIN_LATER
        live.ping(30)  # a connection made before the outage is not dropped for it
        # A catch-up needs the database: an error message, and the connection stays.
        sent = live.send({"action": "subscribe", "operation": "invoice_sync", "since": 0})
        error = live.wait_for(lambda frames: _first(frames[sent:], "error"), 30)
        assert "database is unavailable" in error["error"], error
        live.ping(30)
        stack.servers.postgres.start()

        assert _task(stack, task_id)["status"] == "started"
        listed = call(stack.web, "GET", "/task-status?operation=invoice_sync", token)
        assert listed.status == 200 and task_id in [t["task_id"] for t in listed.body]
        cancelled = call(stack.web, "POST", f"/task-status/{task_id}/cancel", token)
        assert cancelled.status == 202, cancelled
        assert (cancelled.body["status"], cancelled.body["error"]) == (
            "failed",
            "cancelled by outage-runner before it started",
        )
        assert call(stack.web, "GET", "/task-status", never_seen_by_web).status == 200
        assert call(stack.web, "GET", "/readyz", token).status == 200
        assert handshake_close_code(stack.daphne.ws, never_seen_by_daphne) is None
        job_id = _launch(stack, MPVS_ONE_LOCATION)
        job = _terminal(stack, job_id)
        assert job["status"] == "completed", job  # the worker runs jobs again
        assert live.final_state(job_id, 30)["version"] == job["version"]
    _assert_no_traceback(stack, logs_since_start, "daphne", "gunicorn", "worker")


def test_postgresql_stopped_mid_job_a_reporter_rides_it_out_and_the_job_fails_saying_why(
    stack: Stack, logs_since_start: dict[str, int]
) -> None:
    token = stack.tokens[0]
    go = stack.folder / f"go-{uuid.uuid4().hex}"
    marker = f"before the outage {uuid.uuid4().hex[:8]}"
    steps = [
        ["begin", "invoice_sync", 3],
        ["progress", 1, marker],
        ["wait_for_file", str(go)],
        ["progress", 2, "during the outage: not written, carried by the next change"],
        ["complete", {"rode_out": True}],
    ]
    # Far longer than this outage lasts: the reporter must ride it out.
    reporter_env = stack.reporter_env(TRACKER_RETRY_SECONDS="120")
    stack.source.hold("location=L02")
    with (
        LiveClient(stack.daphne.ws, token) as live,
        reporting(steps, reporter_env, stack.folder, "reporter-postgres") as reporter,
    ):
        job_id = _launch(
            stack,
            {
                "operation": "get_mpvs",
                "params": {"business_date": "2025-06-10", "locations": ["L01", "L02"]},
            },
        )
        wait_until(stack.source.holding.is_set, 60, "the job to ask for L02's shifts")
        reported = wait_until(lambda: _reported(stack, "invoice_sync", marker), 60, "reporter")
        stack.servers.postgres.stop()
        go.touch()
        stack.source.release()  # the job saves L02's violations: no database
        worker_log = stack.logs["worker"]
        wait_until(
            lambda: "lost its database" in _log_since(worker_log, logs_since_start["worker"]),
            60,
            "the job to give up on its database",
        )
        wait_until(lambda: "database unreachable" in reporter.log(), 30, "the reporter to retry")
        stack.servers.postgres.start()

        assert reporter.result(120) == {"task_id": reported["task_id"], "status": "completed"}
        job = _terminal(stack, job_id)
        seen = {task: live.final_state(task, 60) for task in (job_id, reported["task_id"])}
    assert "Traceback" not in reporter.log(), reporter.log()[-5000:]

    finished = _task(stack, reported["task_id"])
    assert (finished["status"], finished["result"], finished["error"]) == (
        "completed",
        {"rode_out": True},
        None,
    )
    assert finished["progress"]["current"] == 2  # the progress lost in the outage, carried
    assert job["status"] == "failed"
    assert job["error"].startswith("the job lost its database ("), job["error"]
    assert job["error"].endswith("it stopped and can be run again"), job["error"]
    assert "worker lost" not in job["error"]
    assert wait_until(lambda: _job_outcome(stack, job_id), 30, "the run to end") == "database lost"
    # Live clients heard both ends as they landed.
    assert seen[job_id] == job
    assert seen[reported["task_id"]] == finished
    _assert_no_traceback(stack, logs_since_start, "daphne", "gunicorn", "worker")


def test_redis_stopped_reads_serve_launches_refuse_and_live_clients_get_the_final_state(
    stack: Stack, logs_since_start: dict[str, int]
) -> None:
    token = stack.tokens[0]
    go = stack.folder / f"go-{uuid.uuid4().hex}"
    marker = f"before the outage {uuid.uuid4().hex[:8]}"
    steps = [
        ["begin", "invoice_sync", 2],
        ["progress", 1, marker],
        ["wait_for_file", str(go)],
        ["complete", {"during": "the Redis outage"}],
    ]
    sales = {"operation": "daily_sales", "params": {"business_date": "2025-06-10"}}
    with (
        LiveClient(stack.daphne.ws, token) as live,
        reporting(steps, stack.reporter_env(), stack.folder, "reporter-redis") as reporter,
    ):
        reported = wait_until(lambda: _reported(stack, "invoice_sync", marker), 60, "reporter")
        task_id = reported["task_id"]
        before_outage = int(time.time()) - 1
        stack.servers.redis.stop()

        # Reads come from PostgreSQL.
        assert _task(stack, task_id)["status"] == "processing"
        listed = call(stack.web, "GET", "/task-status?operation=invoice_sync", token)
        assert listed.status == 200 and task_id in [t["task_id"] for t in listed.body]
        ready = call(stack.web, "GET", "/readyz", token)
        assert ready.status == 503 and ready.body["checks"]["redis"].startswith("unavailable")
        # A launch cannot reach the workers: refused, and its task not left "started".
        _assert_try_again_later(
            "launch", call(stack.web, "POST", "/task-status", token, sales), "queue"
        )
        waiting = call(stack.web, "GET", "/task-status?operation=daily_sales&status=started", token)
        assert (waiting.status, waiting.body) == (200, [])
        refused = call(stack.web, "GET", "/task-status?operation=daily_sales", token).body[0]
        assert refused["status"] == "failed"
        assert refused["error"].startswith("could not enqueue the job"), refused["error"]

        go.touch()  # the reporter finishes: written to PostgreSQL, its publish lost
        assert reporter.result(60) == {"task_id": task_id, "status": "completed"}
        live.ping(30)  # the connection survived, or the client is back on a new one
        stack.servers.redis.start()

        final = live.final_state(task_id, 60)
        assert (final["status"], final["result"]) == ("completed", {"during": "the Redis outage"})
        caught_up = asyncio.run(_caught_up(stack.daphne.ws, token, before_outage, task_id, 30))
        assert caught_up == final
        job_id = _launch(stack, MPVS_ONE_LOCATION)  # the queue takes launches again
        job = _terminal(stack, job_id)
        assert job["status"] == "completed", job  # and the worker takes jobs again
        assert live.final_state(job_id, 30) == job
    # A publish or an enqueue that Redis refuses is one warning line, never a traceback.
    _assert_no_traceback(stack, logs_since_start, "daphne", "gunicorn", "worker")
