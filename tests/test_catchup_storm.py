"""A reconnect storm's catch-up: clients arriving together share reads, each gets its own part."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import websockets
from channels.db import database_sync_to_async
from django.db import connections

from tasks import tracker
from tasks.consumers import forget_settled
from tasks.live.catchup import SharedReads, Snapshot, read_everything_since
from tasks.live.wire import encode_document
from tasks.models import TaskStatus

pytestmark = pytest.mark.django_db(transaction=True)


def finished_task(operation: str) -> tuple[str, int]:
    """A completed task written through the tracker: its id and its ``updated_at``."""
    with tracker.start_task(operation, total=1) as task:
        task.complete({"done": 1})
    return str(task.task_id), int(TaskStatus.objects.get(pk=task.task_id).updated_at)


async def close_reader_connections() -> None:
    """The reads' thread keeps its database connection; the test database must be dropped."""
    await database_sync_to_async(connections.close_all)()


def next_second() -> None:
    """Wait until the clock's whole second changes (``since`` counts whole seconds)."""
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.01)


async def catch_up(server, token: str, since: int) -> list[dict]:
    """Connect with ``since`` and collect the catch-up: everything before the pong."""
    address = f"{server.ws}?access_token={token}&since={since}"
    async with websockets.connect(address) as ws:
        assert json.loads(await ws.recv())["type"] == "subscribed"
        await ws.send('{"action": "ping"}')
        got = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["type"] == "pong":
                return got
            if message["type"] == "task_status":
                got.append(message["payload"])


def test_clients_arriving_together_each_get_the_changes_since_their_own_since(live, token):
    older_id, older_at = finished_task("daily_sales")
    next_second()
    newer_id, newer_at = finished_task("invoice_sync")
    assert newer_at > older_at

    async def storm():
        return await asyncio.gather(
            *(catch_up(live, token, older_at if i % 2 else newer_at) for i in range(30))
        )

    results = asyncio.run(asyncio.wait_for(storm(), 60))
    for i, payloads in enumerate(results):
        ids = [p["task_id"] for p in payloads]
        if i % 2:
            assert ids.index(older_id) < ids.index(newer_id), "oldest first"
        else:
            assert newer_id in ids and older_id not in ids
        assert all(p["updated_at"] >= (older_at if i % 2 else newer_at) for p in payloads)


def test_requests_waiting_together_are_served_by_one_read():
    finished_task("daily_sales")
    reads = SharedReads()

    async def together():
        try:
            return await asyncio.gather(*(reads.everything_since(0) for _ in range(25)))
        finally:
            await close_reader_connections()

    results = asyncio.run(together())
    assert (reads.reads, reads.served) == (1, 25)
    assert all(result == results[0] and result for result in results)


def test_a_read_under_way_never_serves_a_client_that_asked_after_it_began():
    """The no-gap rule: a client's read must start after it registered with the hub."""
    first_id, _ = finished_task("daily_sales")
    reading = threading.Event()
    release = threading.Event()

    def read(since: float) -> Snapshot:
        reading.set()
        release.wait(10)
        return read_everything_since(since)

    reads = SharedReads(read)

    async def scenario():
        early = asyncio.ensure_future(reads.everything_since(0))
        await asyncio.get_running_loop().run_in_executor(None, reading.wait, 10)
        late = asyncio.ensure_future(reads.everything_since(0))
        await asyncio.sleep(0)
        assert reads.reads == 0
        release.set()
        try:
            return await early, await late
        finally:
            await close_reader_connections()

    early, late = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert reads.reads == 2, "the late client got a read of its own"
    assert first_id in [update.task_id for update in early]
    assert first_id in [update.task_id for update in late]


def caught_up(task_id: str, version: int, seconds_ago: float):
    now = int(time.time())
    return encode_document(
        {
            "task_id": task_id,
            "operation": "daily_sales",
            "status": "completed",
            "progress": None,
            "result": None,
            "error": None,
            "created_at": now - 600,
            "updated_at": int(now - seconds_ago),
            "version": version,
        }
    )


def test_the_floor_keeps_only_changes_recent_enough_to_have_a_live_copy_on_the_way():
    old, recent = caught_up("old", 4, seconds_ago=600), caught_up("recent", 2, seconds_ago=1)
    floor = {"old": 4, "recent": 2}
    forget_settled(floor, [old, recent])
    assert floor == {"recent": 2}


def test_the_floor_keeps_a_newer_version_sent_after_an_old_one_of_the_same_task():
    floor = {"task": 7}
    forget_settled(floor, [caught_up("task", 6, seconds_ago=600), caught_up("task", 7, 1)])
    assert floor == {"task": 7}
