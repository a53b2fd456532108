"""Deploys that do not kill work: a worker restarted under a running job lets it finish.

One stack for the module (deploy/stack.py), whose worker runs a job that waits
inside a real HTTP source (a request held open until the test lets it go). The
restart is what scripts/deploy.sh does through systemd: SIGTERM (Celery's warm
shutdown), wait for the process to end, start it again.
"""

from __future__ import annotations

import configparser
import json
import re
import signal
import subprocess
import threading
from collections.abc import Iterator

import pytest
from django.conf import settings

from tests.support.servers import ROOT
from tests.support.source_server import Handler, SourceServer
from tests.support.stack import running_stack
from tests.test_stack import USERNAME, request, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

HELD = "location=L03"


class HeldSource(SourceServer):
    """The sample sources, but a request for L03 waits until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.RequestHandlerClass = HeldHandler
        self.entered = threading.Event()
        self.release = threading.Event()


class HeldHandler(Handler):
    server: HeldSource

    def do_GET(self) -> None:  # noqa: N802
        if HELD in self.path and not self.server.release.is_set():
            self.server.entered.set()
            self.server.release.wait(120)
        super().do_GET()


@pytest.fixture(scope="module")
def source() -> Iterator[HeldSource]:
    server = HeldSource()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker, tmp_path_factory, source):
    with running_stack(
        "rollout",
        tmp_path_factory,
        django_db_blocker,
        daphnes=1,
        web_workers=1,
        TASK_STALE_CHECK_SECONDS="3600",
        # The beat looks for lost workers often: a job cut off would show at once.
        JOB_HEARTBEAT_SECONDS="1",
        JOB_LEASE_SECONDS="3",
        WORKER_LOST_CHECK_SECONDS="1",
        TIMECLOCK_SOURCE_URL=f"{source.base}/timeclock",
        SOURCE_TOKEN=source.token,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def auth(stack, django_db_blocker) -> dict[str, str]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from tasks.auth.bearer import issue_local_token

    with django_db_blocker.unblock():
        user = get_user_model().objects.create_user(USERNAME, password="pw")
        user.groups.add(Group.objects.get_or_create(name=settings.TASK_RUNNER_ROLE)[0])
        return {"Authorization": f"Bearer {issue_local_token(user)}"}


def launch(stack, auth: dict[str, str]) -> str:
    body = {
        "operation": "get_mpvs",
        "params": {"business_date": "2025-06-10", "locations": ["L01", "L02", "L03", "L04"]},
    }
    reply = request(
        stack,
        "POST",
        "/task-status",
        {**auth, "Content-Type": "application/json"},
        json.dumps(body).encode(),
    )
    assert reply.status == 202, reply
    return reply.json()["task_id"]


def finished(stack, auth: dict[str, str], task_id: str) -> dict | None:
    document = request(stack, "GET", f"/task-status/{task_id}", auth).json()
    terminal = ("completed", "completed_with_errors", "failed")
    return document if document["status"] in terminal else None


def test_a_worker_restarted_under_a_running_job_lets_it_finish(stack, source, auth):
    worker = stack.services["worker"]
    task_id = launch(stack, auth)
    assert source.entered.wait(60), "the job never reached the held request"

    # The deploy's restart: SIGTERM, as systemd's stop sends it to Celery's main process.
    worker.send(signal.SIGTERM)
    wait_for(lambda: "Warm shutdown" in worker.log(), 30, "Celery's warm shutdown")
    # Held for longer than a lease (3 s): the beat sends its lost-worker check every
    # second (the next worker runs them), and the job's heartbeat goes on meanwhile.
    beat = stack.services["beat"]
    before = beat.log().count("reap_lost_jobs")
    wait_for(lambda: beat.log().count("reap_lost_jobs") >= before + 5, 30, "the beat's checks")
    assert worker.running, "the worker waits for its job"
    assert finished(stack, auth, task_id) is None
    source.release.set()

    worker.proc.wait(60)
    assert worker.proc.returncode == 0, worker.log()[-2000:]
    document = finished(stack, auth, task_id)
    assert document is not None, "the job ended before its worker did"
    assert document["status"] in ("completed", "completed_with_errors"), document
    assert "worker lost" not in (document["error"] or "")

    # The new worker takes the next job.
    stack.start_service("worker")
    again = launch(stack, auth)
    document = wait_for(lambda: finished(stack, auth, again), 60, "the next job")
    assert document["status"] in ("completed", "completed_with_errors"), document


def test_the_worker_unit_waits_longer_for_a_job_than_celery_lets_one_run():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((ROOT / "deploy" / "systemd" / "tasksite-worker@.service").read_text())
    stop = int(unit["Service"]["TimeoutStopSec"])
    assert unit["Service"]["KillMode"] == "mixed"  # SIGTERM to Celery's main process only
    example = (ROOT / "deploy" / "tasksite.env.example").read_text()
    job_max = int(re.search(r"^JOB_MAX_SECONDS=(\d+)$", example, re.M).group(1))
    # Celery's hard limit for a job (tasksite/settings.py: CELERY_TASK_TIME_LIMIT).
    assert job_max + 60 < stop <= job_max + 600


def test_the_deploy_script_is_valid_bash_and_follows_the_documented_order():
    script = ROOT / "scripts" / "deploy.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    steps = [
        "manage check --deploy",
        "manage migrate",
        'systemctl restart "$unit"',  # the workers
        "systemctl restart tasksite-beat.service",
        'wait_http "http://127.0.0.1:$port/healthz"',  # daphne, one at a time
        "systemctl reload tasksite-web.service",
    ]
    positions = [text.index(step) for step in steps]
    assert positions == sorted(positions)
    docs = (ROOT / "docs" / "operations.md").read_text()
    assert "scripts/deploy.sh" in docs


def test_gunicorn_reloaded_under_load_answers_every_request(stack):
    """The deploy's `systemctl reload tasksite-web`: SIGHUP, new workers, the old finish."""
    web = stack.services["web"]
    stop, statuses = threading.Event(), []

    def load() -> None:
        while not stop.is_set():
            statuses.append(request(stack, "GET", "/healthz").status)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(statuses) > 20, 30, "requests before the reload")
        booted = web.log().count("Booting worker")
        web.send(signal.SIGHUP)
        wait_for(lambda: web.log().count("Booting worker") > booted, 30, "a new worker")
        seen = len(statuses)
        wait_for(lambda: len(statuses) > seen + 20, 30, "requests after the reload")
    finally:
        stop.set()
        thread.join(30)
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
    assert web.running
