"""The production layout through the shipped nginx: ``make stack``'s ``Stack`` on the test database.

One stack for the module (deploy/stack.py): nginx with deploy/nginx/tasksite.conf
in front of gunicorn (deploy/gunicorn.conf.py) and two daphne processes, a
Celery worker on a queue of its own and one beat. Every request goes through
nginx, as a client's would. Without nginx these tests fail, as the suite does
without PostgreSQL or Redis.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import runpy
import secrets
import socket
import subprocess
import sys
import time
import uuid
from functools import partial
from pathlib import Path

import pytest
import requests
import websockets
from django.conf import settings
from websockets.exceptions import ConnectionClosed

from deploy import stack as deploy_stack
from tests.support.servers import ROOT, report
from tests.support.stack import running_stack
from tests.support.waiting import wait_for

# django_db: pytest-django sets the test database up only for a run that has a test
# marked so; the tests themselves touch it only through the stack's processes (and
# the module's fixtures commit and flush what those need), so each test's own
# transaction is empty.
pytestmark = [pytest.mark.slow, pytest.mark.django_db]

BODY_LIMIT = 2621440  # Django's DATA_UPLOAD_MAX_MEMORY_SIZE, and nginx's client_max_body_size
LINE_LIMIT = 8190  # request line and header line, without CRLF (nginx and gunicorn)
USERNAME, PASSWORD = "stack-runner", "pw-stack-runner"
METRICS_TOKEN = "stack-metrics-token"


# -- the stack --------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker, tmp_path_factory):
    with running_stack(
        "stack",
        tmp_path_factory,
        django_db_blocker,
        daphnes=2,
        web_workers=2,
        LOG_LEVEL="INFO",
        WORKER_LOST_CHECK_SECONDS="3600",
        TASK_STALE_CHECK_SECONDS="3600",
        METRICS_TOKEN=METRICS_TOKEN,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def token(stack, django_db_blocker) -> str:
    """A local API token of a user with the runner role, committed for the stack's processes."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from tasks.auth.bearer import issue_local_token

    with django_db_blocker.unblock():
        user = get_user_model().objects.create_user(USERNAME, password=PASSWORD)
        user.groups.add(Group.objects.get_or_create(name=settings.TASK_RUNNER_ROLE)[0])
        return issue_local_token(user)


# -- clients ----------------------------------------------------------------------


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    @property
    def from_app(self) -> bool:
        """Django answered (its SecurityMiddleware's header), not nginx or gunicorn."""
        return self.headers.get("x-content-type-options") == "nosniff"

    def __repr__(self) -> str:
        return f"<{self.status} {self.headers} {self.body[:300]!r}>"


def request(
    stack, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


def raw(stack, data: bytes) -> Reply:
    """Bytes as written, for what no HTTP client would send; the connection's whole answer."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received or not _complete(received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(lines[0].split()[1]), headers, body)


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return match is not None and len(body) >= int(match.group(1))


def access_line(stack, request_id: str) -> dict | None:
    """nginx's JSON access log entry of a request, by its request id (None: not yet)."""
    path = stack.log_dir / "tasksite.access.log"
    for line in path.read_text().splitlines() if path.exists() else []:
        entry = json.loads(line)
        if entry["request_id"] == request_id:
            return entry
    return None


def assert_json_error(reply: Reply, status: int, request_id: str | None = None) -> dict:
    """nginx's (or gunicorn's) own error: JSON with a request id, the same as in the header."""
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/json", reply
    body = reply.json()
    assert set(body) == {"detail", "request_id"} and body["detail"], body
    assert body["request_id"] == reply.headers["x-request-id"], reply
    if request_id is not None:
        assert body["request_id"] == request_id
    return body


def ws_url(stack, token: str, query: str = "") -> str:
    return f"{stack.ws_url}?access_token={token}{'&' + query if query else ''}"


async def recv_json(ws, timeout: float = 10.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def statuses_until_terminal(ws, task_id: str, timeout: float = 30.0) -> list[dict]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await recv_json(ws, deadline - time.monotonic())
        if message["type"] == "task_status" and message["payload"]["task_id"] == task_id:
            seen.append(message["payload"])
            if message["payload"]["status"] in ("completed", "completed_with_errors", "failed"):
                return seen
    raise AssertionError(f"no terminal status; saw {[p['status'] for p in seen]}")


# -- the configuration ------------------------------------------------------------


def test_the_stack_serves_the_shipped_configuration_changed_only_where_tagged(tmp_path):
    shipped = deploy_stack.NGINX_SITE.read_text()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    rendered = deploy_stack.render_site(
        shipped,
        listen="127.0.0.1:9",
        web=["127.0.0.1:10"],
        ws=["127.0.0.1:11", "127.0.0.1:12", "127.0.0.1:13"],
        log_dir=tmp_path,
        tls=deploy_stack.Tls("127.0.0.1:14", cert, key),
        limits={"WS_CONNECTIONS": "3", "SIGNIN_RATE": "2r/s"},
    ).splitlines()
    tag = re.compile(r"#\s*stack:\s*[\w -]+$")
    kept, dropping = [], False
    for line in shipped.splitlines():
        if line.strip() in ("# stack: drop-begin", "# stack: drop-end"):
            dropping = line.strip().endswith("begin")
        elif not dropping and not tag.search(line):
            kept.append(line.replace("/var/log/nginx/", f"{tmp_path}/"))
    assert [line for line in rendered if line in kept] == kept, "untagged lines kept in order"
    directives = [line.split("#")[0].strip() for line in rendered]
    assert [d for d in directives if d.startswith("listen")] == [
        "listen 127.0.0.1:9 default_server;",
        "listen 127.0.0.1:14 ssl http2 default_server;",
        "listen 127.0.0.1:14 ssl http2;",
        "listen 127.0.0.1:9;",
    ]
    assert [d for d in directives if d.startswith("server 127.")] == [
        "server 127.0.0.1:10;",
        "server 127.0.0.1:11;",
        "server 127.0.0.1:12;",
        "server 127.0.0.1:13;",
    ]
    assert f"ssl_certificate {cert};" in directives
    assert not [d for d in directives if d.startswith("return 301")]
    assert "server_name 127.0.0.1 localhost;" in directives
    assert "limit_conn tasksite_ws_conn 3;" in directives
    assert any(d.endswith("zone=tasksite_signin:10m rate=2r/s;") for d in directives)
    # Without TLS (the benchmarks), its listens and certificate are left out.
    plain = deploy_stack.render_site(
        shipped, listen="127.0.0.1:9", web=["127.0.0.1:10"], ws=["127.0.0.1:11"], log_dir=tmp_path
    )
    assert " ssl" not in "".join(re.findall(r"listen [^;]*;", plain))
    assert "ssl_certificate " not in plain


def test_the_limits_of_nginx_gunicorn_and_django_agree():
    conf = deploy_stack.NGINX_SITE.read_text()
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == BODY_LIMIT
    assert re.search(r"^\s*client_max_body_size\s+(\d+);", conf, re.M).group(1) == str(BODY_LIMIT)
    assert f"(at most {BODY_LIMIT} bytes)" in conf  # the app's own 413 detail
    buffers = re.search(r"large_client_header_buffers\s+(\d+)\s+(\d+)k;", conf)
    count, size = int(buffers.group(1)), int(buffers.group(2)) * 1024
    gunicorn = runpy.run_path(str(deploy_stack.GUNICORN_CONF))
    assert size - 2 == LINE_LIMIT == gunicorn["limit_request_line"]
    assert gunicorn["limit_request_field_size"] >= size
    assert gunicorn["limit_request_fields"] >= count * size // len("a:b\r\n")
    # The app's errors pass through untouched; only daphne's bodiless handshake refusals
    # (/ws/) are replaced by nginx's JSON.
    ws_block = conf[conf.index("location /ws/ {") :].split("\n    }\n")[0]
    assert conf.count("proxy_intercept_errors on;") == ws_block.count("proxy_intercept_errors on;")
    assert "proxy_intercept_errors off;" in conf


def test_the_environment_example_names_every_setting_the_app_reads(tmp_path):
    source = (ROOT / "tasksite" / "settings.py").read_text()
    read = set(
        re.findall(
            r'(?:env_(?:bool|int|list)\(|os\.environ\.get\(|os\.environ\[)\s*"([A-Z][A-Z0-9_]+)"',
            source,
        )
    )
    read -= {"TASKSITE_QUIET_DEV_WARNING"}  # internal: set by settings itself
    example = (ROOT / "deploy" / "tasksite.env.example").read_text()
    named = set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", example, re.M))
    assert read - named == set(), "settings missing from deploy/tasksite.env.example"
    # The uncommented lines, as systemd reads them, load the settings.
    values = {}
    for line in example.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value[1:-1] if value.startswith('"') else value
    values["VAR_DIR"] = str(tmp_path)
    # The example's CHANGE-ME is refused (tests/test_production_settings.py): a real key.
    values["SECRET_KEY"] = secrets.token_urlsafe(50)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings; "
            "print(settings.DAILY_SALES_SCHEDULE, settings.ENTRA_MODE, settings.DEBUG)",
        ],
        cwd=ROOT,
        env={**os.environ, **values, "DJANGO_SETTINGS_MODULE": "tasksite.settings"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["30", "4", "*", "*", "*", "True", "False"]


# -- through nginx ----------------------------------------------------------------


def test_rest_through_nginx_keeps_the_request_id_in_the_response_and_the_log(stack, token):
    auth = {"Authorization": f"Bearer {token}"}
    rid = f"stack-{uuid.uuid4().hex}"
    reply = request(
        stack, "GET", "/task-status?operation=daily_sales", {**auth, "X-Request-ID": rid}
    )
    assert reply.status == 200 and reply.json() == [] and reply.from_app, reply
    assert reply.headers["x-request-id"] == rid
    web = stack.services["web"]
    wait_for(
        lambda: f"[{rid}] GET /task-status?operation=daily_sales 200" in web.log(),
        5,
        "the app's access line",
    )
    line = wait_for(lambda: access_line(stack, rid), 5, "nginx's access line")
    assert line["path"] == "/task-status" and line["status"] == 200, line  # no query
    assert float(line["upstream_response_time"]) >= 0 and line["user_agent"] == "", line

    # None sent, or one the app would not accept: nginx's own, used by the app as well.
    for sent in ({}, {"X-Request-ID": "not a safe id"}):
        reply = request(stack, "GET", "/task-status/nope", {**auth, **sent})
        assert reply.status == 404 and reply.from_app, reply
        rid = reply.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid) and reply.json()["request_id"] == rid
        wait_for(
            lambda rid=rid: f"[{rid}] GET /task-status/nope 404" in web.log(),
            5,
            "the app's access line",
        )


def test_a_job_launched_through_nginx_runs_on_the_worker_and_streams_over_the_websocket(
    stack, token
):
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def scenario():
        async with websockets.connect(ws_url(stack, token)) as ws:
            assert (await recv_json(ws))["type"] == "subscribed"
            # A client cannot claim https: nginx sets the scheme and clears the rest.
            spoofed = {
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Ssl": "on",
                "X-Forwarded-Host": "evil.example",
            }
            reply = await asyncio.to_thread(
                request,
                stack,
                "POST",
                "/task-status",
                {**auth, **spoofed},
                json.dumps(
                    {"operation": "daily_sales", "params": {"business_date": "2025-06-10"}}
                ).encode(),
            )
            assert reply.status == 202, reply
            task_id = reply.json()["task_id"]
            assert reply.headers["location"] == f"{stack.url}/task-status/{task_id}"
            return task_id, await statuses_until_terminal(ws, task_id, timeout=60)

    task_id, seen = asyncio.run(scenario())
    assert seen[-1]["status"] == "completed_with_errors", seen[-1]  # L07's corrupt file
    assert [p["version"] for p in seen] == sorted({p["version"] for p in seen})
    reply = request(stack, "GET", f"/task-status/{task_id}", auth)
    assert reply.status == 200 and reply.json()["version"] == seen[-1]["version"]


def test_nginx_answers_its_own_errors_in_json_with_a_request_id(stack, token):
    head = "Host: 127.0.0.1\r\nConnection: close\r\n"

    def line_of(length: int) -> bytes:
        return b"GET /" + b"a" * (length - len("GET / HTTP/1.1")) + b" HTTP/1.1\r\n"

    # The request line: at the limit the app answers, one byte over nginx does.
    assert raw(stack, line_of(LINE_LIMIT) + head.encode() + b"\r\n").from_app
    body = assert_json_error(raw(stack, line_of(LINE_LIMIT + 1) + head.encode() + b"\r\n"), 414)
    assert body["detail"] == "request line too long"

    # A header line, and too many headers together.
    def header_of(length: int) -> bytes:
        return b"X-Big: " + b"b" * (length - len("X-Big: ")) + b"\r\n"

    start = f"GET /healthz HTTP/1.1\r\n{head}X-Request-ID: big-header\r\n".encode()
    assert raw(stack, start + header_of(LINE_LIMIT) + b"\r\n").from_app
    assert_json_error(raw(stack, start + header_of(LINE_LIMIT + 1) + b"\r\n"), 431, "big-header")
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(400))
    assert_json_error(raw(stack, start + many + b"\r\n"), 431, "big-header")

    # The body: nginx refuses one over the limit as soon as it reads its length.
    post = (
        f"POST /task-status HTTP/1.1\r\n{head}Authorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nX-Request-ID: big-body\r\n"
    )
    body = assert_json_error(
        raw(stack, f"{post}Content-Length: {BODY_LIMIT + 1}\r\n\r\n".encode()), 413, "big-body"
    )
    assert body["detail"] == f"request body too large (at most {BODY_LIMIT} bytes)"
    at_limit = b'{"pad": "' + b"x" * (BODY_LIMIT - 11) + b'"}'
    reply = raw(stack, f"{post}Content-Length: {len(at_limit)}\r\n\r\n".encode() + at_limit)
    assert reply.status == 400 and reply.from_app, reply  # the app read it: no operation
    assert reply.json()["request_id"] == "big-body"

    # Bytes that are no HTTP request: a TLS hello, a NUL in a header.
    tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n"
    assert_json_error(raw(stack, tls_hello), 400)
    assert_json_error(raw(stack, f"GET / HTTP/1.1\r\n{head}X-A: a\x00b\r\n\r\n".encode()), 400)
    # What nginx passes on but gunicorn's stricter parser refuses is JSON too.
    reply = raw(stack, f"GET /healthz HTTP/1.1\r\n{head}X-A: a\x01b\r\n\r\n".encode())
    assert not reply.from_app
    assert_json_error(reply, 400)
    # The app's own errors pass through untouched (proxy_intercept_errors off).
    reply = request(
        stack,
        "GET",
        "/task-status/nope",
        {"Authorization": f"Bearer {token}", "X-Request-ID": "app-404"},
    )
    assert reply.status == 404 and reply.from_app, reply
    assert reply.json()["request_id"] == "app-404" and "cache-control" not in reply.headers


def test_metrics_are_never_passed_on_by_nginx_only_scraped_on_loopback(stack):
    bearer = {"Authorization": f"Bearer {METRICS_TOKEN}", "X-Request-ID": "metrics"}
    reply = request(stack, "GET", "/metrics", bearer)
    assert not reply.from_app
    assert assert_json_error(reply, 404, "metrics")["detail"] == "not found"
    # gunicorn, each daphne, the worker's and beat's exporters: directly, on loopback
    for port in [
        stack.web_port,
        *stack.ws_ports,
        stack.worker_metrics_port,
        stack.beat_metrics_port,
    ]:
        direct = requests.get(f"http://127.0.0.1:{port}/metrics", headers=bearer, timeout=10)
        assert direct.status_code == 200 and "tasksite_tracker_publishes_total" in direct.text


def test_gunicorn_down_is_a_json_502_until_it_is_back(stack, token):
    stack.stop_service("web")
    try:
        reply = request(
            stack,
            "GET",
            "/task-status",
            {"Authorization": f"Bearer {token}", "X-Request-ID": "web-down"},
        )
        body = assert_json_error(reply, 502, "web-down")
        assert body["detail"] == "the service is unavailable; try again later"
        assert reply.headers["retry-after"] == "5"
        line = wait_for(lambda: access_line(stack, "web-down"), 5, "nginx's access line")
        assert line["status"] == 502 and line["upstream_status"] == "502", line
    finally:
        stack.start_service("web")
    assert request(stack, "GET", "/healthz").status == 200


def test_a_killed_daphne_s_client_reconnects_through_nginx_to_the_other_and_catches_up(
    stack, token, tmp_path
):
    """Two daphne upstreams: kill the one a client is on mid-task, no final state is lost."""
    gate = tmp_path / "go"

    def connections() -> dict[str, int]:
        return {d.name: d.log().count('"WSCONNECT /ws/task-status"') for d in stack.daphnes()}

    async def scenario():
        before = connections()
        async with websockets.connect(ws_url(stack, token)) as ws:
            assert (await recv_json(ws))["type"] == "subscribed"
            on = wait_for(
                lambda: [n for n, c in connections().items() if c > before[n]],
                5,
                "the daphne the client is on",
            )
            assert len(on) == 1
            job = asyncio.get_running_loop().run_in_executor(
                None,
                partial(
                    report,
                    [
                        ["start", "invoice_sync", 3],
                        ["progress", 1, "vendor 1"],
                        ["wait_for_file", str(gate)],
                        ["progress", 2, "vendor 2"],
                        ["progress", 3, "vendor 3"],
                        ["complete", {"invoices": 3}],
                    ],
                ),
            )
            seen = [(await recv_json(ws))["payload"]]
            while (seen[-1].get("progress") or {}).get("current") != 1:
                seen.append((await recv_json(ws))["payload"])
            last_seen = seen[-1]["updated_at"]
            stack.kill(on[0])
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        gate.touch()
        done = await job
        before = connections()
        async with websockets.connect(ws_url(stack, token, f"since={last_seen}")) as ws:
            assert (await recv_json(ws))["subscription"] == {"since": float(last_seen)}
            after = await statuses_until_terminal(ws, done["task_id"])
        assert [n for n, c in connections().items() if c > before[n]] == [
            d.name for d in stack.daphnes() if d.name != on[0]
        ]
        return on[0], seen, after

    killed = None
    try:
        killed, seen, after = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        for daphne in stack.daphnes():
            if not daphne.running:
                stack.start_service(daphne.name)
    assert after[-1]["status"] == "completed" and after[-1]["result"] == {"invoices": 3}
    assert after[-1]["progress"]["current"] == 3
    assert after[0]["version"] > seen[-1]["version"], "catch-up starts after what was seen"
    versions = [p["version"] for p in after]
    assert versions == sorted(set(versions))
    assert killed


def test_the_monitor_s_pages_and_static_files_come_through_nginx(stack, token):
    reply = request(stack, "GET", "/")
    assert reply.status == 302 and reply.headers["location"].startswith("/accounts/login/")
    reply = request(stack, "GET", "/static/tasks/monitor.js")
    assert reply.status == 200 and "javascript" in reply.headers["content-type"]
    assert b"import" in reply.body

    # Signing in as a browser does: the CSRF check holds behind the proxy (Host and Origin).
    browser = requests.Session()
    page = browser.get(f"{stack.url}/accounts/login/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    signed_in = browser.post(
        f"{stack.url}/accounts/login/",
        data={"username": USERNAME, "password": PASSWORD, "csrfmiddlewaretoken": csrf},
        headers={"Origin": stack.url, "Referer": f"{stack.url}/accounts/login/"},
        timeout=10,
    )
    assert signed_in.status_code == 200 and signed_in.url == f"{stack.url}/", signed_in.text[:500]
    assert 'id="connection"' in signed_in.text


def test_the_stack_s_logs_hold_no_token(stack, token):
    link = "Zm9yZ2VkLWxpbms.3q2-7w:1tXyZa:forgedsignature0123456789"
    headers = {"X-Request-ID": "doc-link", "Authorization": f"Bearer {token}"}
    reply = request(stack, "GET", f"/documents/{link}", headers)
    assert reply.status in (403, 404, 410), reply.status  # 404: no reader role
    line = wait_for(lambda: access_line(stack, "doc-link"), 5, "nginx's access line")
    assert line["path"] == "/documents/[REDACTED]", line
    for path in Path(stack.log_dir).iterdir():
        text = path.read_text(errors="replace")
        assert token not in text, path.name
        assert link not in text, path.name
