"""The WebSocket handshake's checks of Host and Origin, through a real daphne."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.support.servers import running_daphne

pytestmark = pytest.mark.django_db(transaction=True)


async def first_message(uri: str, **kwargs) -> dict:
    async with websockets.connect(uri, **kwargs) as ws:
        return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def refused_status(uri: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(uri, **kwargs):
            pass
    return refused.value.response.status_code


def raw_handshake_status(port: int, host: str, path: str) -> int:
    """The status of a hand-written upgrade request (clients will not forge Host)."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def test_a_host_outside_allowed_hosts_is_refused_like_http(token):
    with running_daphne() as server:
        path = f"/ws/task-status?access_token={token}"
        forged = raw_handshake_status(server.port, "evil.example", path)
        allowed = raw_handshake_status(server.port, f"127.0.0.1:{server.port}", path)
        ok = asyncio.run(first_message(f"{server.ws}?access_token={token}"))
    assert (forged, allowed) == (403, 101)
    assert ok["type"] == "subscribed"


def test_ws_allowed_origins_admits_a_browser_app_on_another_host(token):
    with running_daphne(WS_ALLOWED_ORIGINS="app.example.com,.partner.example") as server:
        uri = f"{server.ws}?access_token={token}"

        async def scenario():
            app = await first_message(uri, origin="https://app.example.com")
            partner = await first_message(uri, origin="https://ops.partner.example")
            foreign = await refused_status(uri, origin="https://evil.example")
            return app, partner, foreign

        app, partner, foreign = asyncio.run(scenario())
    assert app["type"] == partner["type"] == "subscribed"
    assert foreign == 403


def test_an_unknown_websocket_path_is_refused_at_the_handshake_without_a_traceback(token):
    with running_daphne() as server:
        base = f"ws://127.0.0.1:{server.port}"

        async def scenario():
            unknown = await refused_status(f"{base}/ws/nope?access_token={token}")
            prefix = await refused_status(f"{base}/ws/task-status/more?access_token={token}")
            ok = await first_message(f"{base}/ws/task-status/?access_token={token}")
            return unknown, prefix, ok

        unknown, prefix, ok = asyncio.run(scenario())
        log = server.log()
    assert (unknown, prefix) == (403, 403)
    assert ok["type"] == "subscribed", "the trailing-slash form is the same endpoint"
    assert "Traceback" not in log and "no endpoint at '/ws/nope'" in log


def test_an_origin_that_is_no_url_is_refused_not_a_server_error(token):
    with running_daphne() as server:
        uri = f"{server.ws}?access_token={token}"

        async def scenario():
            return [
                await refused_status(uri, origin=origin)
                for origin in ("http://[", "http://[::1", "https://]x[")
            ]

        statuses = asyncio.run(scenario())
        log = server.log()
    assert set(statuses) <= {400, 403}, statuses
    assert "Traceback" not in log
