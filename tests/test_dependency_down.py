"""PostgreSQL going away under a running server: 503 with Retry-After, 4503 on the WebSocket.

The server reaches PostgreSQL through a TCP proxy that the test cuts, so the
database really disappears mid-flight, with no mock anywhere. A client must be
able to tell "try again later" from "your request is broken".
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tasks import tracker
from tests.support.servers import Daphne, database_url, service_env
from tests.support.tcp_proxy import tcp_proxy

pytestmark = pytest.mark.django_db(transaction=True)


def call(
    server: Daphne,
    method: str,
    path: str,
    token: str | None = None,
    body: dict | None = None,
    headers: dict | None = None,
) -> tuple[int, Any, Any]:
    request = urllib.request.Request(
        f"{server.http}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Content-Type": "application/json",
            **(headers or {}),
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.headers, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read() or b"null")


@contextmanager
def daphne_behind_proxy(token_cache_seconds: int) -> Iterator[tuple[Daphne, Any]]:
    parts = urlsplit(database_url())
    with tcp_proxy((parts.hostname or "127.0.0.1", parts.port or 5432)) as proxy:
        url = database_url().replace(f":{parts.port or 5432}/", f":{proxy.port}/")
        env = service_env(DATABASE_URL=url, API_TOKEN_CACHE_SECONDS=str(token_cache_seconds))
        server = Daphne(env).start()
        try:
            yield server, proxy
        finally:
            server.stop()


@pytest.fixture
def behind_proxy(transactional_db):
    """Every token looked up in the database: the handshake itself needs it."""
    with daphne_behind_proxy(0) as pair:
        yield pair


@pytest.fixture
def behind_proxy_tokens_cached(transactional_db):
    """Tokens cached (the default): a known client is authenticated without the database."""
    with daphne_behind_proxy(300) as pair:
        yield pair


def test_every_rest_route_answers_503_with_retry_after_while_the_database_is_down(
    behind_proxy, token, runner
):
    from tasks.auth.bearer import issue_local_token

    server, proxy = behind_proxy
    run_token = issue_local_token(runner)
    task_id = tracker.create_task("daily_sales").task_id
    assert call(server, "GET", f"/task-status/{task_id}", token)[0] == 200

    proxy.cut()
    answers = {
        "read": call(server, "GET", f"/task-status/{task_id}", token),
        "list": call(server, "GET", "/task-status?operation=daily_sales", token),
        "launch": call(
            server,
            "POST",
            "/task-status",
            run_token,
            {"operation": "daily_sales", "params": {"business_date": "2025-06-10"}},
        ),
        "cancel": call(server, "POST", f"/task-status/{task_id}/cancel", run_token),
        "session": call(
            server,
            "GET",
            "/task-status",
            None,
            headers={"Cookie": "sessionid=abcdefghijklmnopqrstuvwxyz012345"},
        ),
        "page": call(
            server,
            "GET",
            "/",
            None,
            headers={"Cookie": "sessionid=abcdefghijklmnopqrstuvwxyz012345"},
        ),
        "ready": call(server, "GET", "/readyz"),
    }
    for name, (status, headers, body) in answers.items():
        assert status == 503, (name, status, body)
        if name != "ready":
            assert headers.get("Retry-After") == "5", name
            assert body["request_id"] == headers["X-Request-ID"], name
            assert "database is unavailable" in body["detail"], name
    log = server.log()
    assert "Traceback" not in log
    # One warning each, from what answered; not also Django's ERROR per 503.
    assert "database unavailable: OperationalError" in log
    assert "Service Unavailable" not in log

    proxy.restore()
    assert call(server, "GET", f"/task-status/{task_id}", token)[0] == 200


def test_a_websocket_handshake_while_the_database_is_down_closes_with_4503(behind_proxy, token):
    server, proxy = behind_proxy

    async def scenario() -> int:
        async with websockets.connect(f"{server.ws}?access_token={token}") as ws:
            assert json.loads(await ws.recv())["type"] == "subscribed"
        proxy.cut()
        async with websockets.connect(f"{server.ws}?access_token={token}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 20)
            return closed.value.rcvd.code

    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == 4503
    assert "Traceback" not in server.log()


def test_a_reconnect_with_since_while_the_database_is_down_closes_with_4503(
    behind_proxy_tokens_cached, token
):
    """The token is known (cached), but the catch-up needs the database: try again later."""
    server, proxy = behind_proxy_tokens_cached
    tracker.create_task("daily_sales")

    async def scenario() -> int:
        async with websockets.connect(f"{server.ws}?access_token={token}") as ws:
            assert json.loads(await ws.recv())["type"] == "subscribed"
        proxy.cut()
        url = f"{server.ws}?access_token={token}&since=1"
        async with websockets.connect(url) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # "subscribed" may come first: the catch-up is what fails
                    await asyncio.wait_for(ws.recv(), 20)
            return closed.value.rcvd.code

    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == 4503
    assert "Traceback" not in server.log()
