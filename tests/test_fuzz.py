"""Generated input against the real servers: no frame raises out of the consumer, no request
gets a 5xx. Bounded (a fixed number of examples), so the suite's time stays sensible."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
import schemathesis
import websockets
from django.conf import settings
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from tasks.auth.bearer import issue_local_token
from tests.support.servers import ROOT, free_port, service_env, wait_http

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = hypothesis_settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)

# -- the WebSocket consumer -----------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
frames = st.one_of(
    st.fixed_dictionaries(
        {"action": st.sampled_from(["subscribe", "unsubscribe", "ping", "nope"]) | values},
        optional={
            "operation": values | st.sampled_from(["daily_sales", "email_tips"]),
            "task_id": values | st.uuids().map(str),
            "since": values,
            "extra": values,
        },
    ).map(json.dumps),
    values.map(json.dumps),
    st.text(max_size=200),
)


@pytest.fixture
def ws_url(live, user) -> str:
    return f"{live.ws}?access_token={issue_local_token(user)}"


def test_every_generated_frame_gets_json_back_and_the_connection_stays(live, ws_url):
    replies: list[dict] = []

    @EXAMPLES
    @given(frame=frames)
    def one(frame: str) -> None:
        async def exchange() -> list[dict]:
            async with websockets.connect(ws_url) as ws:
                await asyncio.wait_for(ws.recv(), 5)  # subscribed
                await ws.send(frame)
                await ws.send('{"action": "ping"}')
                got = []
                while not got or got[-1].get("type") != "pong":
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
                return got

        got = asyncio.run(exchange())
        assert all(
            m["type"] in {"error", "subscribed", "unsubscribed", "pong", "task_status"} for m in got
        ), got
        replies.extend(got)

    one()
    assert any(m["type"] == "error" for m in replies)
    assert "Traceback" not in live.log()


# -- the REST API, from its own OpenAPI schema ------------------------------------

schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))


@pytest.fixture
def staff_auth(django_user_model) -> dict[str, str]:
    boss = django_user_model.objects.create_user("fuzz-boss", is_staff=True, is_superuser=True)
    return {"Authorization": f"Bearer {issue_local_token(boss)}"}


@pytest.fixture
def gunicorn(transactional_db):
    """The REST API as production serves it: gunicorn with the shipped configuration
    (whose own refusals are JSON too, unlike daphne's bare 400)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "deploy/gunicorn.conf.py",
            "-w",
            "1",
            "-b",
            f"127.0.0.1:{port}",
            "tasksite.wsgi:application",
        ],
        cwd=ROOT,
        env=service_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(15)


@schema.parametrize()
@EXAMPLES
def test_no_generated_request_gets_a_server_error(case, gunicorn, staff_auth):
    assert settings.REDIS_URL  # launches queue their jobs on a queue no worker reads
    response = case.call(base_url=gunicorn, headers=staff_auth)
    case.validate_response(response, checks=[not_a_server_error])
    content_type = (response.headers.get("content-type") or [""])[0]
    if response.status_code >= 400:  # every error is JSON, whatever was asked
        assert content_type.startswith("application/json"), (
            response.status_code,
            content_type,
            case.method,
            case.path,
            case.path_parameters,
            case.query,
            response.request.url,
            response.content[:200],
        )
