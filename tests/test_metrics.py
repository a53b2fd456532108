"""Prometheus metrics, scraped from the real processes after real actions.

daphne (its own registry), gunicorn with deploy/gunicorn.conf.py (multiprocess
mode: any worker's /metrics sums every worker), a Celery worker in its production
pool (prefork: the job runs in a child, the main process serves the sum) and beat.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tasks import tracker
from tasks.live.hub import Hub
from tasks.live.routes import ALL
from tasks.live.wire import Update
from tests.support.servers import Daphne, free_port, gunicorn, service_env
from tests.support.waiting import wait_for as wait_until

METRICS_TOKEN = "metrics-test-token-" + uuid.uuid4().hex


# -- scraping ---------------------------------------------------------------------


class Scrape:
    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        """One sample's value; 0 when it is not there yet (a labelled child never used)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def scrape(base: str, token: str = METRICS_TOKEN) -> Scrape:
    response = requests.get(
        f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return Scrape(response.text)


def assert_guarded(base: str) -> None:
    """404 without a token, 401 JSON with a wrong one."""
    missing = requests.get(f"{base}/metrics", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["detail"] == "not found"
    wrong = requests.get(f"{base}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    body = wrong.json()
    assert body["detail"] == "invalid metrics token" and body["request_id"]
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")


def exporter_up(port: int) -> bool:
    """The exporter starts after the process says it is ready (beat_init): wait for it."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# -- the view, in process ---------------------------------------------------------


@pytest.mark.django_db
def test_metrics_is_404_unless_the_token_is_set_and_given_and_401_when_wrong(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404
    settings.METRICS_TOKEN = METRICS_TOKEN
    missing = client.get("/metrics")
    assert missing.status_code == 404 and missing.json()["detail"] == "not found"
    for wrong in ("Bearer nope", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x"):
        answer = client.get("/metrics", HTTP_AUTHORIZATION=wrong)
        assert answer.status_code == 401, wrong
        assert answer.json()["detail"] == "invalid metrics token"
        assert answer.json()["request_id"] == answer["X-Request-ID"]
    ok = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert ok.status_code == 200
    assert b"tasksite_http_requests_total" in ok.content
    posted = client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert posted.status_code == 405 and posted.json()["detail"] == "method not allowed"


def test_the_hub_counts_each_round_once_conflated_stale_and_delivered():
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    names = [
        "tasksite_hub_rounds_total",
        "tasksite_hub_updates_routed_total",
        "tasksite_hub_updates_conflated_total",
        "tasksite_hub_frames_delivered_total",
    ]
    hub = Hub()
    got: list[list[int]] = [[], []]

    class Client:
        def __init__(self, index: int) -> None:
            self.index = index

        def deliver(self, update: Update) -> None:
            got[self.index].append(update.version)

        def deliver_many(self, updates: list[Update], blob: bytes | None) -> None:
            got[self.index].extend(update.version for update in updates)

    for index in (0, 1):
        hub.add(Client(index), ALL)
    now = int(time.time())

    def wire(version: int, status: str) -> str:
        payload = {"type": "task_status", "payload": {"updated_at": now, "version": version}}
        return f"t1 daily_sales {version} {status}\n{json.dumps(payload, separators=(',', ':'))}"

    hub.dispatch_raw_many([wire(1, "started")])
    before = [value(name) for name in names]
    stale_before = value("tasksite_hub_updates_dropped_total", reason="stale")
    lag_before = value("tasksite_hub_round_lag_seconds_count")
    # v2 a transition, v3 and v4 plain progress (v4 replaces v3), v1 again: stale
    hub.dispatch_raw_many(
        [wire(2, "processing"), wire(3, "processing"), wire(4, "processing"), wire(1, "started")]
    )
    after = [value(name) for name in names]
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 2, 1, 4]
    assert value("tasksite_hub_updates_dropped_total", reason="stale") - stale_before == 1
    assert value("tasksite_hub_round_lag_seconds_count") - lag_before == 1
    assert got == [[1, 2, 4], [1, 2, 4]]


# -- daphne -----------------------------------------------------------------------


@pytest.fixture
def daphne(transactional_db) -> Iterator[Daphne]:
    server = Daphne(service_env(METRICS_TOKEN=METRICS_TOKEN)).start()
    try:
        yield server
    finally:
        server.stop()


def test_daphne_counts_requests_by_route_and_websocket_connections_and_the_hub(daphne, token):
    base = daphne.http
    assert_guarded(base)
    task = tracker.create_task("daily_sales")
    before = scrape(base)
    n = 5
    for _ in range(n):
        response = requests.get(
            f"{base}/task-status/{task.task_id}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 200
    missing = requests.get(
        f"{base}/task-status/{uuid.uuid4()}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert missing.status_code == 404

    async def watch() -> dict:
        async with websockets.connect(f"{daphne.ws}?access_token={token}") as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "subscribed"
            middle = scrape(base)
            assert (
                middle("tasksite_websocket_connections")
                == before("tasksite_websocket_connections") + 1
            )
            # a change made by another process reaches this one's hub through Redis
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: tracker.create_task("invoice_sync")
            )
            message = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert message["type"] == "task_status"
            return message

    asyncio.run(watch())
    after = wait_until(
        lambda: (
            (s := scrape(base))("tasksite_websocket_connections_closed_total", code="1000")
            > before("tasksite_websocket_connections_closed_total", code="1000")
            and s
        ),
        5,
        "the close to be counted",
    )

    def delta(name: str, **labels: str) -> float:
        return after(name, **labels) - before(name, **labels)

    requests_total = "tasksite_http_requests_total"
    assert delta(requests_total, route="task-detail", method="GET", status="200") == n
    assert delta(requests_total, route="task-detail", method="GET", status="404") == 1
    assert delta("tasksite_http_request_duration_seconds_count", route="task-detail") == n + 1
    assert delta("tasksite_websocket_connections_opened_total") == 1
    assert delta("tasksite_websocket_connections_closed_total", code="1000") == 1
    assert delta("tasksite_websocket_connections") == 0
    assert delta("tasksite_hub_rounds_total") >= 1
    assert delta("tasksite_hub_updates_routed_total") >= 1
    assert delta("tasksite_hub_frames_delivered_total") >= 1
    assert delta("tasksite_hub_round_lag_seconds_count") >= 1
    # Unlabelled ones show from the first scrape, at 0 until something happens.
    assert {
        "tasksite_hub_subscription_reconnects_total",
        "tasksite_websocket_updates_dropped_total",
        "tasksite_websocket_updates_conflated_total",
        "tasksite_tracker_publishes_total",
        "tasksite_tasks_purged_total",
        "tasksite_beat_lock_held",
    } <= after.names()


# -- gunicorn ---------------------------------------------------------------------


def test_gunicorn_workers_are_summed_in_multiprocess_mode(
    transactional_db, runner, tmp_path, settings
):
    from tasks.auth.bearer import issue_local_token

    token = issue_local_token(runner)
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale, from a previous run")
    env = service_env(
        METRICS_TOKEN=METRICS_TOKEN,
        WEB_WORKERS="2",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        CELERY_QUEUE=settings.CELERY_TASK_DEFAULT_QUEUE,
    )
    task = tracker.create_task("daily_sales")
    with gunicorn(env, tmp_path / "gunicorn.log") as base:
        assert not (metrics_dir / "counter_1.db").exists(), "emptied at start"
        assert_guarded(base)
        before = scrape(base)
        headers = {"Authorization": f"Bearer {token}"}

        def get_task(_: int) -> int:
            url = f"{base}/task-status/{task.task_id}"
            return requests.get(url, headers=headers, timeout=10).status_code

        def worker_pids() -> set[str]:
            return {path.name.rsplit("_", 1)[-1] for path in metrics_dir.glob("counter_*.db")}

        # Bursts of requests at once, each on its own connection, until both sync
        # workers have served some: the second worker may still be booting when the
        # first answers, and one after another one worker could answer them all.
        n = 0
        deadline = time.monotonic() + 30
        while len(worker_pids()) < 2 and time.monotonic() < deadline:
            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(get_task, range(8)))
            assert codes == [200] * 8
            n += 8
        launched = requests.post(
            f"{base}/task-status",
            headers=headers,
            timeout=10,
            json={"operation": "daily_sales", "params": {"business_date": "2025-06-05"}},
        )
        assert launched.status_code == 202, launched.text
        assert requests.get(f"{base}/no/such/page", timeout=10).status_code == 404
        # Whichever worker answers, it reports the sum of all of them.
        scrapes = [scrape(base) for _ in range(4)]
        pids = worker_pids()
        log = (tmp_path / "gunicorn.log").read_text(errors="replace")
    assert len(pids) >= 2, (pids, log[-2000:])
    # Each live worker's memory and CPU, a series a pid (no process_* of their own here).
    memory = {
        dict(labels)["pid"]: value
        for (name, labels), value in scrapes[-1].samples.items()
        if name == "tasksite_process_resident_memory_bytes"
    }
    assert len(memory) >= 2 and all(value > 10e6 for value in memory.values()), memory
    for after in scrapes:

        def delta(name: str, after=after, **labels: str) -> float:
            return after(name, **labels) - before(name, **labels)

        assert (
            delta("tasksite_http_requests_total", route="task-detail", method="GET", status="200")
            == n
        )
        assert (
            delta("tasksite_http_requests_total", route="task-list", method="POST", status="202")
            == 1
        )
        assert (
            delta("tasksite_http_requests_total", route="unmatched", method="GET", status="404")
            == 1
        )
        assert delta("tasksite_http_request_duration_seconds_count", route="task-detail") == n
        assert delta("tasksite_tracker_writes_total", kind="create") == 1
        assert delta("tasksite_tracker_publishes_total") == 1
        assert delta("tasksite_tracker_publish_failures_total") == 0


# -- a Celery worker and beat -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_job_on_a_prefork_worker_is_counted_by_the_worker_s_exporter(queue, sources, tmp_path):
    from operations import services
    from tasks.selectors import get_task
    from tests.support.celery_processes import celery_process, env_for, terminal

    port = free_port()
    env = env_for(queue, METRICS_TOKEN=METRICS_TOKEN, WORKER_METRICS_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    with celery_process("worker", env, tmp_path, " ready.", pool="prefork"):
        wait_until(lambda: exporter_up(port), 15, "the worker's exporter")
        assert_guarded(base)
        before = scrape(base)
        task_id = services.launch(
            "daily_sales", {"business_date": "2025-06-05"}, request_id="metrics", user_label="test"
        )
        task = terminal(task_id)
        after = wait_until(
            lambda: (
                (s := scrape(base))(
                    "tasksite_jobs_finished_total", operation="daily_sales", status=task.status
                )
                > before(
                    "tasksite_jobs_finished_total", operation="daily_sales", status=task.status
                )
                and s
            ),
            10,
            "the job to be counted",
        )
    assert task.status == "completed", task.error

    def delta(name: str, **labels: str) -> float:
        return after(name, **labels) - before(name, **labels)

    assert delta("tasksite_jobs_started_total", operation="daily_sales") == 1
    assert delta("tasksite_jobs_finished_total", operation="daily_sales", status="completed") == 1
    assert delta("tasksite_job_duration_seconds_count", operation="daily_sales") == 1
    assert delta("tasksite_job_duration_seconds_sum", operation="daily_sales") > 0
    # Every write after the launch's create was the job's, each published once.
    writes = delta("tasksite_tracker_writes_total", kind="update") + delta(
        "tasksite_tracker_writes_total", kind="locked"
    )
    assert writes == get_task(task_id).version - 1 > 0
    assert delta("tasksite_tracker_publishes_total") == writes


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_beat_reports_that_it_holds_the_lock(queue, sources, tmp_path):
    from tests.support.celery_processes import celery_process, env_for

    port = free_port()
    env = env_for(queue, METRICS_TOKEN=METRICS_TOKEN, BEAT_METRICS_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    with celery_process("beat", env, tmp_path, "beat: Starting"):
        wait_until(lambda: exporter_up(port), 15, "the beat's exporter")
        assert_guarded(base)
        held = wait_until(
            lambda: scrape(base)("tasksite_beat_lock_held") == 1, 10, "the beat to hold the lock"
        )
    assert held


@pytest.fixture
def queue(settings) -> Iterator[str]:
    import redis

    name = f"test-metrics-{uuid.uuid4().hex[:10]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = name
    yield name
    redis.Redis.from_url(settings.REDIS_URL).delete(
        name, f"{name}-beat:lock", f"{name}-beat:last-run"
    )


@pytest.fixture
def sources(settings, tmp_path):
    from tests.support.source_server import SAMPLE

    settings.SALES_SOURCE_URL = f"file://{SAMPLE / 'sales'}"
    settings.INVOICE_SOURCE_URL = f"file://{SAMPLE / 'invoices'}"
    settings.ACCOUNTING_TARGET_URL = f"file://{tmp_path / 'accounting'}"
