"""The shipped nginx as an operator probes it: TLS profile, unknown hosts, JSON errors, limits.

One stack for the module (deploy/stack.py), with the site's per-client limits
set small through the stack's settings (``NGINX_<NAME>``) so that a few requests
reach them. Everything goes through nginx, over plain HTTP and over TLS with a
real client (Python's ssl), as a scanner's or a browser's requests would.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import ssl
from functools import partial

import pytest
import websockets

from deploy import stack as deploy_stack
from tests.support.stack import running_stack
from tests.test_stack import (
    BODY_LIMIT,
    USERNAME,
    Reply,
    _complete,
    access_line,
    assert_json_error,
    raw,
    recv_json,
    request,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

HSTS = "max-age=31536000"
LIMITS = {
    "NGINX_SIGNIN_RATE": "1r/m",
    "NGINX_SIGNIN_BURST": "2",
    "NGINX_PROBE_RATE": "1r/m",
    "NGINX_PROBE_BURST": "2",
    "NGINX_BEARER_RATE": "1r/m",
    "NGINX_BEARER_BURST": "5",
    "NGINX_WS_CONNECTIONS": "2",
}


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker, tmp_path_factory):
    with running_stack(
        "proxy", tmp_path_factory, django_db_blocker, daphnes=1, web_workers=2, **LIMITS
    ) as running:
        yield running


@pytest.fixture(scope="module")
def token(stack, django_db_blocker) -> str:
    from django.contrib.auth import get_user_model

    from tasks.auth.bearer import issue_local_token

    with django_db_blocker.unblock():
        return issue_local_token(get_user_model().objects.create_user(USERNAME, password="pw"))


# -- a real TLS client --------------------------------------------------------------


def tls_context(
    version: ssl.TLSVersion | None = None, ciphers: str | None = None
) -> ssl.SSLContext:
    """A client that would negotiate anything it is told to (security level 0)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the stack's throwaway certificate
    if version is not None:
        context.minimum_version = context.maximum_version = version
    if ciphers is not None:
        context.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def handshake(stack, context: ssl.SSLContext, sni: str = "localhost") -> dict:
    with (
        socket.create_connection(("127.0.0.1", stack.tls_port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=sni) as tls,
    ):
        return {
            "version": tls.version(),
            "cipher": tls.cipher()[0],
            "alpn": tls.selected_alpn_protocol(),
            "ticket": tls.session is not None and tls.session.has_ticket,
        }


def refused(stack, context: ssl.SSLContext, sni: str = "localhost") -> str:
    """The alert the server answered a handshake with (its reason), never a local failure."""
    with pytest.raises(ssl.SSLError) as error:
        handshake(stack, context, sni)
    reason = error.value.reason or ""
    assert "ALERT" in reason or "UNRECOGNIZED_NAME" in reason, error.value
    return reason


def tls_raw(stack, data: bytes) -> bytes:
    """HTTP/1.1 over TLS, bytes as written; the whole answer (b"" when dropped)."""
    context = tls_context()
    context.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", stack.tls_port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        tls.sendall(data)
        received = b""
        while chunk := tls.recv(65536):
            received += chunk
    return received


def parse(received: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (x.partition(":") for x in lines[1:])]
    return int(lines[0].split()[1]), headers, body


# -- TLS --------------------------------------------------------------------------


def test_tls_is_1_2_or_1_3_with_forward_secret_aead_ciphers_no_tickets_and_http2(stack):
    version = ssl.TLSVersion
    assert handshake(stack, tls_context())["version"] == "TLSv1.3"
    assert handshake(stack, tls_context())["alpn"] == "h2", "HTTP/2 offered by ALPN"
    for cipher in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
        got = handshake(stack, tls_context(version.TLSv1_2, cipher))
        assert got["version"] == "TLSv1.2" and got["cipher"] == cipher
        assert not got["ticket"], "no session tickets"
    # Older protocols, and ciphers without forward secrecy or without AEAD: refused
    # by the server (its alert), though this client would take them.
    for old in (version.TLSv1, version.TLSv1_1):
        assert "PROTOCOL_VERSION" in refused(stack, tls_context(old, "ALL"))
    for weak in ("AES128-SHA", "AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-SHA"):
        assert "HANDSHAKE_FAILURE" in refused(stack, tls_context(version.TLSv1_2, weak))


def test_an_unknown_host_is_dropped_and_never_reaches_django(stack):
    # TLS for another name: refused in the handshake, no certificate shown.
    assert "UNRECOGNIZED_NAME" in refused(stack, tls_context(), sni="scanner.example")
    for host in ("scanner.example", "203.0.113.9", "localhost.evil.example"):
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            request(stack, "GET", "/healthz", {"Host": host, "X-Request-ID": "drop"})
        ask = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        assert tls_raw(stack, ask.encode()) == b""
    # A WebSocket handshake too: closed before daphne sees it.
    upgrade = (
        "GET /ws/task-status HTTP/1.1\r\nHost: scanner.example\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as sock:
        sock.sendall(upgrade.encode())
        assert sock.recv(1024) == b""
    logs = "".join(service.log() for service in stack.services.values())
    assert "DisallowedHost" not in logs and "scanner.example" not in logs
    # The service's own names still pass.
    assert request(stack, "GET", "/healthz", {"Host": "localhost"}).status == 200


# -- nginx's own answers --------------------------------------------------------------


def test_every_status_nginx_makes_is_json_with_its_request_id_and_hsts(stack, token):
    head = "Host: 127.0.0.1\r\nConnection: close\r\n"
    too_large = f"POST /task-status HTTP/1.1\r\n{head}Content-Length: {BODY_LIMIT + 1}\r\n\r\n"
    cases = [
        (b"TRACE / HTTP/1.1\r\n" + head.encode() + b"\r\n", 405, "method not allowed"),
        (b"GET / HTTP/2.0\r\n" + head.encode() + b"\r\n", 505, "HTTP version not supported"),
        (b"GET / HTTP/1.1 junk\r\n" + head.encode() + b"\r\n", 400, "bad request"),
        (b"\x00\x01\x02 garbage\r\n\r\n", 400, "bad request"),
        (
            too_large.encode(),
            413,
            f"request body too large (at most {BODY_LIMIT} bytes)",
        ),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + head.encode() + b"\r\n", 414, None),
        (b"GET /metrics HTTP/1.1\r\n" + head.encode() + b"\r\n", 404, "not found"),
        (
            b"POST /task-status HTTP/1.1\r\n" + head.encode() + b"Transfer-Encoding: gzip\r\n\r\n",
            501,
            "not implemented (an unknown Transfer-Encoding)",
        ),
    ]
    for data, status, detail in cases:
        for reply in (raw(stack, data), _reply(tls_raw(stack, data))):
            body = assert_json_error(reply, status)
            assert detail is None or body["detail"] == detail, reply
            assert reply.headers["strict-transport-security"] == HSTS, reply
    # Plain HTTP to the TLS port (nginx's 497): a 400 that says what went wrong.
    with socket.create_connection(("127.0.0.1", stack.tls_port), timeout=10) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\n{head}X-Request-ID: plain\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    reply = _reply(received)
    body = assert_json_error(reply, 400, "plain")
    assert body["detail"] == "plain HTTP request sent to the HTTPS port; use https://"
    assert reply.headers["strict-transport-security"] == HSTS

    # The app's answers carry exactly one HSTS header (nginx's), errors included.
    for path in ("/healthz", "/task-status/nope"):
        ask = f"GET {path} HTTP/1.1\r\n{head}Authorization: Bearer {token}\r\n\r\n"
        status, headers, _ = parse(tls_raw(stack, ask.encode()))
        assert [v for k, v in headers if k == "strict-transport-security"] == [HSTS], path
        assert status in (200, 404) and ("x-content-type-options", "nosniff") in headers


def test_every_status_with_a_json_detail_is_caught_by_every_server_s_error_pages():
    conf = deploy_stack.NGINX_SITE.read_text()
    detailed = re.search(r"map \$status \$json_error_detail \{(.*?)\}", conf, re.S).group(1)
    statuses = set(re.findall(r"^\s*(\d{3})\s", detailed, re.M)) - {"431"}  # 494's answer
    assert {"405", "429", "497", "505", "502", "504", "413", "400"} <= statuses
    servers = conf.split("\nserver {")[1:]
    assert len(servers) == 3  # unknown hosts, plain HTTP's redirect, the service
    for server in servers:
        caught = {
            code
            for line in re.findall(r"^\s*error_page ([^;]*);", server, re.M)
            for code in line.split()
            if code.isdigit()
        }
        assert statuses | {"494"} <= caught, statuses - caught


def _reply(received: bytes) -> Reply:
    status, headers, body = parse(received)
    return Reply(status, dict(headers), body)


def test_nginx_s_access_log_is_json_with_upstream_time_user_agent_and_no_query(stack, token):
    reply = request(
        stack,
        "GET",
        "/task-status?operation=daily_sales&access_token=secret-in-query",
        {"Authorization": f"Bearer {token}", "X-Request-ID": "log-json", "User-Agent": "probe/1"},
    )
    assert reply.status == 200, reply
    line = wait_for(lambda: access_line(stack, "log-json"), 5, "nginx's access line")
    assert line["method"] == "GET" and line["path"] == "/task-status" and line["status"] == 200
    assert line["user_agent"] == "probe/1" and float(line["upstream_response_time"]) >= 0
    assert line["upstream_addr"] == f"127.0.0.1:{stack.web_port}"
    log = (stack.log_dir / "tasksite.access.log").read_text()
    assert "secret-in-query" not in log and token not in log
    assert all(json.loads(entry) for entry in log.splitlines())


# -- limits ---------------------------------------------------------------------------

# Limits count per client address; the host's own 127.0.0.1 is exempt (its monitoring),
# so these clients come from another loopback address.
CLIENT = "127.0.0.2"


def ask(stack, path: str, headers: dict[str, str] | None = None) -> Reply:
    conn = http.client.HTTPConnection(
        "127.0.0.1", stack.port, timeout=30, source_address=(CLIENT, 0)
    )
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


def _until_limited(stack, path: str, headers: dict[str, str], most: int = 20):
    for attempt in range(most):
        reply = ask(stack, path, {**headers, "X-Request-ID": f"limit-{attempt}"})
        if reply.status == 429:
            return attempt, reply
    raise AssertionError(f"{path}: no 429 in {most} requests")


def assert_limited(reply: Reply) -> None:
    body = assert_json_error(reply, 429)
    assert body["detail"] == "too many requests; try again later"
    assert int(reply.headers["retry-after"]) >= 1
    assert reply.headers["strict-transport-security"] == HSTS


def test_sign_in_token_and_probe_paths_are_rate_limited_with_a_json_429(stack):
    # A fresh zone lets the first request and its burst through, then answers 429.
    for path, headers in [
        ("/accounts/login/", {}),
        ("/readyz", {}),
        ("/task-status", {"Authorization": "Bearer not-a-token"}),
    ]:
        passed, reply = _until_limited(stack, path, headers)
        burst = int(LIMITS["NGINX_BEARER_BURST" if headers else "NGINX_PROBE_BURST"])
        assert passed == 1 + burst, (path, passed)
        assert_limited(reply)
        assert reply.json()["request_id"] == f"limit-{passed}"
    # The sign-in zone is one for its paths: the form above used it up for this client.
    for path in ("/admin/login/", "/oauth2/login", "/oauth2/callback?code=x"):
        assert_limited(ask(stack, path))
    # Requests without a bearer token, and /healthz, are not counted; nor is the host
    # itself (127.0.0.1), whose monitoring probes /readyz.
    for _ in range(10):
        assert ask(stack, "/healthz").status == 200
        assert ask(stack, "/task-status").status == 401
        assert request(stack, "GET", "/readyz").status == 200
        assert request(stack, "GET", "/accounts/login/").status == 200


def test_websocket_connections_per_client_are_limited_with_a_json_429(stack, token):
    upgrade = (
        f"GET /ws/task-status?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Request-ID: ws-over\r\n\r\n"
    )
    url = f"{stack.ws_url}?access_token={token}"

    def over_the_limit() -> Reply:
        with socket.create_connection(
            ("127.0.0.1", stack.port), timeout=10, source_address=(CLIENT, 0)
        ) as sock:
            sock.sendall(upgrade.encode())
            received = b""
            while not _complete(received) and (chunk := sock.recv(65536)):
                received += chunk
        return _reply(received)

    async def scenario():
        connect = partial(websockets.connect, url, local_addr=(CLIENT, 0))
        async with connect() as one, connect() as two:  # NGINX_WS_CONNECTIONS
            for ws in (one, two):
                assert (await recv_json(ws))["type"] == "subscribed"
                assert ws.response.headers["X-Request-ID"]
            over = await asyncio.to_thread(over_the_limit)
            # Another client address has its own.
            async with websockets.connect(url) as other:
                assert (await recv_json(other))["type"] == "subscribed"
        # Closed: the slots are free again.
        async with connect() as again:
            assert (await recv_json(again))["type"] == "subscribed"
        return over

    over = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert_limited(over)
    assert over.json()["request_id"] == "ws-over" and over.headers["retry-after"] == "5"


def test_a_refused_websocket_handshake_is_json_with_its_request_id(stack, token):
    for extra, rid in [("Origin: https://evil.example\r\n", "ws-origin"), ("", "ws-path")]:
        path = "/ws/task-status" if extra else "/ws/elsewhere"
        upgrade = (
            f"GET {path}?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Request-ID: {rid}\r\n\r\n"
        )
        reply = raw(stack, upgrade.encode())
        body = assert_json_error(reply, 403, rid)
        assert "refused" in body["detail"], body
        assert reply.headers["strict-transport-security"] == HSTS
