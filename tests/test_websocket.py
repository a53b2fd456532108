"""The WebSocket endpoint through a real daphne, with jobs reporting from other processes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from functools import partial

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tasks.models import TaskStatus
from tests.support.servers import report, running_daphne, service_env

pytestmark = pytest.mark.django_db(transaction=True)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def recv_json(ws, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def statuses_until_terminal(ws, task_id: str | None = None, timeout: float = 10.0):
    """Payloads received for one task until it ends (or the first task seen)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await recv_json(ws, deadline - time.monotonic())
        if message["type"] != "task_status":
            continue
        payload = message["payload"]
        if task_id is None:
            task_id = payload["task_id"]
        if payload["task_id"] != task_id:
            continue
        seen.append(payload)
        if payload["status"] in ("completed", "completed_with_errors", "failed"):
            return seen
    raise AssertionError(f"no terminal status; saw {[p['status'] for p in seen]}")


async def quiet(ws, seconds: float = 0.5) -> list[dict]:
    """Everything that arrives within ``seconds``."""
    got = []
    try:
        while True:
            got.append(await recv_json(ws, seconds))
    except TimeoutError:
        return got


def url(server, token: str, query: str = "") -> str:
    return f"{server.ws}?access_token={token}{'&' + query if query else ''}"


JOB = [
    ["start", "daily_sales", 3],
    ["progress", 1, "store 1"],
    ["sleep", 0.15],
    ["error", "store 2: file missing"],
    ["sleep", 0.15],
    ["progress", 3, "store 3"],
    ["complete", {"stores": 3}],
]


def test_a_new_connection_sees_every_change_of_a_job_in_order(live, token):
    async def scenario():
        async with websockets.connect(url(live, token)) as ws:
            assert await recv_json(ws) == {"type": "subscribed", "subscription": {}}
            done = asyncio.get_running_loop().run_in_executor(None, report, JOB)
            seen = await statuses_until_terminal(ws)
            await done
            return seen

    seen = run(scenario())
    assert [p["status"] for p in seen] == [
        "started",
        "processing",
        "error",
        "processing",
        "completed_with_errors",
    ]
    assert [p["version"] for p in seen] == [1, 2, 3, 4, 5]
    assert seen[-1]["result"] == {"stores": 3}
    assert seen[-1]["error"] == "store 2: file missing"
    assert set(seen[-1]) == {
        "task_id",
        "operation",
        "status",
        "progress",
        "result",
        "error",
        "created_at",
        "updated_at",
        "version",
    }


def test_subscriptions_by_operation_and_task_id_filter_what_arrives(live, token):
    async def scenario():
        async with (
            websockets.connect(url(live, token, "operation=invoice_sync")) as by_op,
            websockets.connect(url(live, token)) as everything,
        ):
            assert (await recv_json(by_op))["subscription"] == {"operation": "invoice_sync"}
            await recv_json(everything)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, report, [["start", "daily_sales"], ["complete"]])
            wanted = await loop.run_in_executor(
                None, report, [["start", "invoice_sync"], ["complete"]]
            )
            got_op = [m["payload"]["operation"] for m in await quiet(by_op, 1.0)]
            got_all = [m["payload"]["operation"] for m in await quiet(everything, 0.3)]
            return wanted, got_op, got_all

    wanted, got_op, got_all = run(scenario())
    assert got_op == ["invoice_sync", "invoice_sync"]
    assert got_all == ["daily_sales", "daily_sales", "invoice_sync", "invoice_sync"]


def test_subscribe_and_unsubscribe_by_task_id(live, token):
    async def scenario():
        loop = asyncio.get_running_loop()
        first = await loop.run_in_executor(None, report, [["start", "get_mpvs"]])
        async with websockets.connect(url(live, token)) as ws:
            await recv_json(ws)
            await ws.send(json.dumps({"action": "unsubscribe"}))
            assert await recv_json(ws) == {"type": "unsubscribed", "subscription": {}}
            await ws.send(json.dumps({"action": "subscribe", "task_id": first["task_id"]}))
            assert (await recv_json(ws))["subscription"] == {"task_id": first["task_id"]}
            await loop.run_in_executor(None, report, [["start", "get_mpvs"], ["complete"]])
            assert await quiet(ws, 0.8) == [], "another task's updates must not arrive"
            await ws.send(json.dumps({"action": "unsubscribe", "task_id": first["task_id"]}))
            assert (await recv_json(ws))["type"] == "unsubscribed"

    run(scenario())


@pytest.mark.parametrize(
    ("frame", "error_starts"),
    [
        ("not json", "frame is not valid JSON"),
        ("[1, 2]", "frame must be a JSON object"),
        ('{"action": "dance"}', "unknown action"),
        ('{"action": 5}', "unknown action"),
        ('{"nothing": true}', "unknown action"),
        ('{"action": "subscribe", "operation": 3}', "unknown operation"),
        ('{"action": "subscribe", "operation": "payroll"}', "unknown operation"),
        ('{"action": "subscribe", "task_id": "12"}', "task_id must be a UUID"),
        ('{"action": "subscribe", "task_id": ["a"]}', "task_id must be a UUID"),
        ('{"action": "subscribe", "since": "soon"}', "since must be"),
        ('{"action": "subscribe", "since": -5}', "since must not be negative"),
        ('{"action": "subscribe", "since": true}', "since must be"),
        (
            '{"action": "subscribe", "operation": "get_mpvs", "task_id": "x"}',
            "give operation or task_id",
        ),
    ],
)
def test_frames_it_cannot_take_get_an_error_and_the_connection_stays(
    live, token, frame, error_starts
):
    async def scenario():
        async with websockets.connect(url(live, token)) as ws:
            await recv_json(ws)
            await ws.send(frame)
            error = await recv_json(ws)
            await ws.send('{"action": "ping"}')
            return error, await recv_json(ws)

    error, pong = run(scenario())
    assert error["type"] == "error"
    assert error["error"].startswith(error_starts), error
    assert pong == {"type": "pong"}


def test_a_binary_frame_gets_an_error(live, token):
    async def scenario():
        async with websockets.connect(url(live, token)) as ws:
            await recv_json(ws)
            await ws.send(b"\x00\x01")
            return await recv_json(ws)

    assert run(scenario())["type"] == "error"


def test_a_frame_over_64_kib_closes_with_1009(live, token):
    async def scenario():
        async with websockets.connect(url(live, token), max_size=None) as ws:
            await recv_json(ws)
            await ws.send(json.dumps({"action": "ping", "pad": "x" * 70_000}))
            with pytest.raises(ConnectionClosed) as closed:
                await recv_json(ws)
            return closed.value.rcvd.code

    assert run(scenario()) == 1009


def test_a_frame_just_under_the_limit_is_answered(live, token):
    async def scenario():
        async with websockets.connect(url(live, token)) as ws:
            await recv_json(ws)
            await ws.send(json.dumps({"action": "ping", "pad": "x" * 60_000}))
            return await recv_json(ws)

    assert run(scenario()) == {"type": "pong"}


def test_the_101st_subscription_is_refused_and_the_connection_stays(live, token):
    async def scenario():
        ids = [str(uuid.uuid4()) for _ in range(101)]
        query = "&".join(f"task_id={i}" for i in ids[:100])
        async with websockets.connect(url(live, token, query)) as ws:
            replies = [await recv_json(ws) for _ in range(100)]
            await ws.send(json.dumps({"action": "subscribe", "task_id": ids[100]}))
            refused = await recv_json(ws)
            await ws.send('{"action": "ping"}')
            return replies, refused, await recv_json(ws)

    replies, refused, pong = run(scenario())
    assert all(r["type"] == "subscribed" for r in replies)
    assert refused["type"] == "error" and "100 subscriptions" in refused["error"]
    assert pong == {"type": "pong"}


@pytest.mark.parametrize("credentials", [None, "", "garbage", "tsk_not-a-real-token"])
def test_missing_or_bad_tokens_are_closed_with_4401(live, credentials):
    target = live.ws if credentials is None else f"{live.ws}?access_token={credentials}"

    async def scenario():
        async with websockets.connect(target) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await recv_json(ws)
            return closed.value.rcvd.code

    assert run(scenario()) == 4401


def test_the_authorization_header_works_for_non_browser_clients(live, token):
    async def scenario():
        async with websockets.connect(
            live.ws, additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            return await recv_json(ws)

    assert run(scenario())["type"] == "subscribed"


def test_a_foreign_origin_is_refused_at_the_handshake(live, token):
    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url(live, token), origin="https://evil.example"):
                pass
        async with websockets.connect(url(live, token), origin="http://127.0.0.1") as ws:
            ok = await recv_json(ws)
        return refused.value.response.status_code, ok

    status, ok = run(scenario())
    assert status == 403
    assert ok["type"] == "subscribed"


def test_a_client_that_drops_mid_task_catches_up_with_since(live, token, tmp_path):
    """The client sees the task start, drops, the task ends; `since` brings the end."""
    gate = tmp_path / "go"

    async def scenario():
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(
            None,
            report,
            [
                ["start", "invoice_sync", 2],
                ["progress", 1, "vendor 1"],
                ["wait_for_file", str(gate)],
                ["progress", 2, "vendor 2"],
                ["complete", {"invoices": 2}],
            ],
        )
        async with websockets.connect(url(live, token)) as ws:
            await recv_json(ws)
            first = (await recv_json(ws))["payload"]
            last_seen = first["updated_at"]
        gate.touch()
        done = await job
        async with websockets.connect(url(live, token, f"since={last_seen}")) as ws:
            assert (await recv_json(ws))["subscription"] == {"since": float(last_seen)}
            seen = await statuses_until_terminal(ws, done["task_id"])
        return seen

    seen = run(scenario())
    assert seen[-1]["status"] == "completed"
    assert seen[-1]["result"] == {"invoices": 2}
    versions = [p["version"] for p in seen]
    assert versions == sorted(set(versions)), "no duplicates, no reorder"


def test_catch_up_then_live_has_no_gap_and_no_reorder(live, token):
    """Subscribe with since while a job keeps writing: the first payload is the catch-up
    of a task midway (not its start), then every later version up to the stored last one,
    rising, none missing."""

    def version_now() -> int:
        row = TaskStatus.objects.filter(operation="daily_sales").order_by("-created_at").first()
        return row.version if row is not None else 0

    async def scenario():
        loop = asyncio.get_running_loop()
        steps = [["start", "daily_sales", 40]]
        steps += [x for i in range(1, 41) for x in (["progress", i, f"{i}"], ["sleep", 0.12])]
        steps += [["complete"]]
        job = loop.run_in_executor(None, report, steps)
        deadline = time.monotonic() + 20
        while await asyncio.to_thread(version_now) < 5:  # the job is well under way
            assert time.monotonic() < deadline, "the job never got going"
            await asyncio.sleep(0.05)
        async with websockets.connect(url(live, token, "since=0")) as ws:
            await recv_json(ws)
            seen = await statuses_until_terminal(ws, timeout=20)
        await job
        return seen

    seen = run(scenario())
    versions = [p["version"] for p in seen]
    stored = TaskStatus.objects.get(pk=seen[0]["task_id"])
    assert seen[0]["status"] == "processing" and versions[0] >= 5, seen[0]
    assert versions[0] < stored.version - 5, "caught up too late to test the joint"
    assert versions == list(range(versions[0], stored.version + 1)), versions
    assert seen[-1]["status"] == "completed"


def test_a_late_publish_of_what_the_catch_up_sent_is_not_sent_twice(live, token):
    """The tracker publishes after its commit, so a catch-up can read a change first.

    Here the publish of version 1 is held back until the client has caught up
    on it; its late copy must not reach the client a second time, before 2.
    """
    from django.db import connection, transaction

    from tasks import tracker

    committed, release = threading.Event(), threading.Event()

    def create() -> tracker.TaskHandle:
        try:
            with transaction.atomic():
                # runs first after the commit: the tracker's publish waits behind it
                transaction.on_commit(lambda: (committed.set(), release.wait(10)))
                return tracker.create_task("daily_sales", total=2)
        finally:
            connection.close()

    def progress(handle: tracker.TaskHandle) -> None:
        try:
            handle.progress(1, "one")
            handle.complete()
        finally:
            connection.close()

    async def scenario():
        loop = asyncio.get_running_loop()
        creating = loop.run_in_executor(None, create)
        assert await loop.run_in_executor(None, committed.wait, 10)
        async with websockets.connect(url(live, token, "since=0")) as ws:
            await recv_json(ws)
            first = await recv_json(ws)
            assert (first["type"], first["payload"]["version"]) == ("task_status", 1)
            release.set()
            handle = await creating
            await asyncio.sleep(0.3)  # the late copy of version 1 arrives meanwhile
            await loop.run_in_executor(None, progress, handle)
            rest = await statuses_until_terminal(ws, handle.task_id)
        return [first["payload"], *rest]

    seen = run(scenario())
    assert [p["version"] for p in seen] == [1, 2, 3], [(p["version"], p["status"]) for p in seen]


def test_clients_of_two_servers_both_see_a_change_made_by_a_third_process(live, token):
    async def scenario():
        with running_daphne() as other:
            async with (
                websockets.connect(url(live, token)) as a,
                websockets.connect(url(other, token)) as b,
            ):
                await recv_json(a)
                await recv_json(b)
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, report, [["start", "get_mpvs"], ["fail", "x"]])
                return await statuses_until_terminal(a), await statuses_until_terminal(b)

    seen_a, seen_b = run(scenario())
    assert [p["status"] for p in seen_a] == ["started", "failed"]
    assert seen_a == seen_b


def test_a_client_too_slow_to_read_is_closed_with_4013(transactional_db, token):
    steps = [["start", "daily_sales", 400], ["flood", 400, 20_000], ["complete"]]

    async def scenario():
        with running_daphne(WS_SEND_HIGH_WATER="4096", WS_SLOW_CLIENT_SECONDS="1") as server:
            async with websockets.connect(url(server, token), max_queue=1) as ws:
                await recv_json(ws)
                loop = asyncio.get_running_loop()
                flood_env = service_env(TASK_PROGRESS_MIN_INTERVAL="0")
                await loop.run_in_executor(None, partial(report, steps, env=flood_env))
                await asyncio.sleep(2.5)
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
                return closed.value.rcvd.code

    assert run(scenario()) == 4013


def test_health_of_the_served_app(live):
    import urllib.request

    with urllib.request.urlopen(f"{live.http}/readyz", timeout=5) as response:
        assert json.load(response)["checks"] == {"database": "ok", "redis": "ok"}


def test_clients_are_told_to_reconnect_with_4001_when_the_server_stops(transactional_db, token):
    async def scenario():
        with running_daphne() as server:
            async with websockets.connect(url(server, token)) as ws:
                await recv_json(ws)
                await asyncio.get_running_loop().run_in_executor(None, server.stop)
                with pytest.raises(ConnectionClosed) as closed:
                    await recv_json(ws)
                return closed.value.rcvd.code, server.proc.returncode

    code, returncode = run(scenario())
    assert code == 4001
    assert returncode is not None, "the server still stops"


def test_a_change_whose_publish_was_lost_is_resent_when_the_hub_reconnects(live, token):
    """The job's PUBLISH fails (its Redis is unreachable): the database is the truth.

    When the server's subscription drops and comes back, the hub re-sends what
    changed meanwhile from the database, so the client still gets the final state.
    """
    import redis
    from django.conf import settings

    def kill_hub_connection() -> int:
        client = redis.Redis.from_url(settings.REDIS_URL)
        killed = 0
        for info in client.client_list(_type="pubsub"):
            if info["name"] == f"task-status-hub:{live.proc.pid}":
                killed += client.client_kill_filter(_id=info["id"])
        return killed

    async def scenario():
        loop = asyncio.get_running_loop()
        async with websockets.connect(url(live, token)) as ws:
            await recv_json(ws)
            lost = partial(report, env=service_env(REDIS_URL="redis://127.0.0.1:1/0"))
            done = await loop.run_in_executor(None, lost, [["start", "get_mpvs"], ["complete"]])
            assert await quiet(ws, 0.5) == [], "nothing was published"
            assert await loop.run_in_executor(None, kill_hub_connection) == 1
            return done, await statuses_until_terminal(ws, done["task_id"], timeout=30)

    done, seen = run(scenario())
    assert seen[-1]["status"] == "completed"
    assert seen[-1]["version"] == 2
