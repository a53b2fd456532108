"""Frames meant to hurt, a Redis that is down, and writers the embedded default cannot hear.

Each answer is an ``error`` message on a connection that stays open, or a
documented close code; nothing is leaked and nothing is lost.
"""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
import websockets

from tests.support.servers import Daphne, free_port, report, running_daphne, service_env

pytestmark = pytest.mark.django_db(transaction=True)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def recv_json(ws, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def answer_to(ws, frame: str) -> dict:
    await ws.send(frame)
    return await recv_json(ws)


def test_deeply_nested_frames_get_an_error_and_leak_nothing(token):
    server = Daphne(service_env()).start()
    try:

        async def scenario():
            answers = []
            for _ in range(3):
                async with websockets.connect(f"{server.ws}?access_token={token}") as ws:
                    await recv_json(ws)
                    answers.append(await answer_to(ws, "[" * 5000 + "]" * 5000))
                    answers.append(await answer_to(ws, '{"a":' * 3000 + "1" + "}" * 3000))
                    answers.append(await answer_to(ws, '{"action": "ping"}'))
                    # parsed, but no value is quoted whole in the error
                    deep = "[" * 500 + "]" * 500
                    answers.append(await answer_to(ws, f'{{"action": {deep}}}'))
                    frame = f'{{"action": "subscribe", "task_id": {deep}}}'
                    answers.append(await answer_to(ws, frame))
            await asyncio.sleep(0.5)  # let the server see the last close
            return answers

        answers = run(scenario())
    finally:
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(10)
    assert [a["type"] for a in answers] == ["error", "error", "pong", "error", "error"] * 3
    assert "nested too deeply" in answers[0]["error"]
    assert "unknown action [[" in answers[3]["error"] and len(answers[3]["error"]) < 200
    assert "task_id must be a UUID" in answers[4]["error"] and len(answers[4]["error"]) < 200
    log = server.log()
    assert "Traceback" not in log and "RecursionError" not in log
    # the hub forgot every closed client: none is left to close at shutdown
    assert "closing 0 WebSocket clients" in log


@pytest.mark.parametrize(
    "frame, words",
    [
        ({"action": "subscribe", "operaton": "daily_sales"}, ["'operaton'", "operation"]),
        ({"action": "unsubscribe", "since": 0}, ["'since'"]),
        ({"action": "subscribe", "task_id": "x", "extra": 1}, ["'extra'"]),
    ],
)
def test_a_misspelt_or_unknown_field_is_an_error_not_a_subscription(live, token, frame, words):
    async def scenario():
        async with websockets.connect(f"{live.ws}?access_token={token}") as ws:
            await recv_json(ws)
            error = await answer_to(ws, json.dumps(frame))
            pong = await answer_to(ws, '{"action": "ping"}')
            return error, pong

    error, pong = run(scenario())
    assert error["type"] == "error"
    assert all(word in error["error"] for word in words), error
    assert pong == {"type": "pong"}


@pytest.mark.parametrize("since", ["9" * 400, "-" + "9" * 400, "1e400", '"1e999"'])
def test_a_since_too_large_for_a_float_is_an_error_and_the_connection_stays(live, token, since):
    async def scenario():
        async with websockets.connect(f"{live.ws}?access_token={token}") as ws:
            await recv_json(ws)
            error = await answer_to(ws, '{"action": "subscribe", "since": ' + since + "}")
            pong = await answer_to(ws, '{"action": "ping"}')
            return error, pong

    error, pong = run(scenario())
    assert error["type"] == "error" and "since" in error["error"], error
    assert pong == {"type": "pong"}
    assert "Traceback" not in live.log()


def test_since_is_echoed_as_the_number_sent(live, token):
    async def scenario():
        async with websockets.connect(f"{live.ws}?access_token={token}") as ws:
            await recv_json(ws)
            whole = await answer_to(
                ws, '{"action": "subscribe", "operation": "daily_sales", "since": 1700000000}'
            )
            return whole

    assert run(scenario())["subscription"] == {"operation": "daily_sales", "since": 1700000000}


def test_with_redis_down_a_client_still_connects_and_catches_up(token):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    report([["start", "invoice_sync"], ["complete", {"n": 1}]])
    with running_daphne(REDIS_URL=dead) as server:

        async def scenario():
            async with websockets.connect(f"{server.ws}?access_token={token}&since=0") as ws:
                subscribed = await recv_json(ws)
                caught_up = await recv_json(ws, timeout=15)
                return subscribed, caught_up

        subscribed, caught_up = run(scenario())
        log = server.log()
    assert subscribed["type"] == "subscribed"
    assert caught_up["type"] == "task_status" and caught_up["payload"]["status"] == "completed"
    assert "Traceback" not in log


def test_embedded_default_hears_a_job_in_another_process(token):
    """Without Redis, a job run by ``run_operation`` (another process) still shows live."""
    with running_daphne(REDIS_URL="") as server:

        async def scenario():
            async with websockets.connect(f"{server.ws}?access_token={token}") as ws:
                await recv_json(ws)
                loop = asyncio.get_running_loop()
                done = await loop.run_in_executor(
                    None,
                    lambda: report(
                        [
                            ["start", "daily_sales", 2],
                            ["progress", 1, "one"],
                            ["complete", {"ok": True}],
                        ],
                        env=service_env(REDIS_URL=""),
                    ),
                )
                while True:
                    message = await recv_json(ws, timeout=5)
                    if message["payload"]["status"] == "completed":
                        return done, message["payload"]

        done, final = run(scenario())
    assert final["task_id"] == done["task_id"]
    assert final["result"] == {"ok": True}
