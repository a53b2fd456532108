"""Entra ID mode in a real daphne process: WebSocket, staff sign-in and log redaction.

One daphne per module runs with the issuer's environment (as production would
with Microsoft's); the test database is shared with it, so tests commit rows.
"""

from __future__ import annotations

import time
import uuid
from urllib.parse import urljoin

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.forgery import FORGERIES
from tests.support.issuer import TestIssuer
from tests.support.servers import running_daphne

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ADMIN = "TaskStatus.Admin"


@pytest.fixture(scope="module")
def issuer():
    with TestIssuer() as running:
        yield running


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, issuer):
    with django_db_blocker.unblock(), running_daphne(**issuer.env()) as running:
        yield running


def close_code(url: str, *, headers: dict[str, str] | None = None, timeout: float = 10) -> int:
    """Connect and read until the server closes; the close code it sent."""
    with connect(url, additional_headers=headers, open_timeout=timeout) as ws:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ws.recv(timeout=deadline - time.monotonic())
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else -1
            except TimeoutError:
                break
    raise AssertionError("the server did not close the connection")


def stays_open(url: str, *, headers: dict[str, str] | None = None) -> bool:
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        ws.send('{"action": "ping"}')
        while True:
            message = ws.recv(timeout=10)
            if '"pong"' in message:
                return True


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_a_good_token_opens_the_websocket_by_query_and_by_header(server, issuer, version):
    token = issuer.token(version=version)
    assert stays_open(f"{server.ws}?access_token={token}")
    assert stays_open(server.ws, headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_token_closes_the_websocket_with_4401(server, issuer, forgery):
    token = FORGERIES[forgery](issuer)
    assert close_code(f"{server.ws}?access_token={token}") == 4401
    assert close_code(server.ws, headers={"Authorization": f"Bearer {token}"}) == 4401


@pytest.mark.parametrize("query", ["?access_token=", "?access_token"])
def test_an_empty_token_closes_the_websocket_with_4401(server, query):
    assert close_code(f"{server.ws}{query}") == 4401


def test_an_empty_bearer_header_closes_the_websocket_with_4401(server):
    assert close_code(server.ws, headers={"Authorization": "Bearer "}) == 4401


def test_no_credentials_close_the_websocket_with_4401(server):
    assert close_code(server.ws) == 4401


def test_the_websocket_closes_with_4401_soon_after_the_token_expires(server, issuer):
    token = issuer.token(lifetime=3)
    started = time.time()
    assert close_code(f"{server.ws}?access_token={token}", timeout=15) == 4401
    assert time.time() - started < 3 + 4


def test_a_rotated_key_opens_the_websocket_without_a_restart(server, issuer):
    assert stays_open(f"{server.ws}?access_token={issuer.token()}")
    issuer.rotate()
    assert stays_open(f"{server.ws}?access_token={issuer.token()}")


def test_a_reconnect_storm_costs_no_key_fetch(server, issuer):
    token = issuer.token()
    assert stays_open(f"{server.ws}?access_token={token}")
    before = issuer.jwks_requests()
    for _ in range(20):
        assert stays_open(f"{server.ws}?access_token={token}")
    assert issuer.jwks_requests() == before


def test_rest_answers_401_invalid_token_for_a_forged_token(server, issuer):
    response = requests.get(
        f"{server.http}/task-status",
        headers={"Authorization": f"Bearer {FORGERIES['tampered_payload'](issuer)}"},
        timeout=10,
    )
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    good = requests.get(
        f"{server.http}/task-status",
        headers={"Authorization": f"Bearer {issuer.token()}"},
        timeout=10,
    )
    assert good.status_code == 200


def test_tokens_never_reach_the_logs(server, issuer):
    token = issuer.token()
    forged = FORGERIES["tampered_signature"](issuer)
    assert stays_open(f"{server.ws}?access_token={token}")
    assert close_code(f"{server.ws}?access_token={forged}") == 4401
    # Plain HTTP requests with the token in the URL: daphne logs their full URI.
    requests.get(f"{server.http}/ws/task-status?access_token={token}", timeout=10)
    requests.get(f"{server.http}/task-status?operation=nope&access_token={token}", timeout=10)
    requests.get(f"{server.http}/nowhere?access_token={forged}", timeout=10)
    time.sleep(0.5)
    log = server.log()
    assert "/ws/task-status" in log and "access_token=[REDACTED]" in log
    for secret in (token, forged):
        assert secret not in log
        assert secret.split(".")[2][:20] not in log


def test_staff_sign_in_through_the_authorization_code_flow(server, issuer):
    browser = requests.Session()
    login = browser.get(f"{server.http}/oauth2/login?next=/task-status", allow_redirects=False)
    assert login.status_code == 302
    authorize_url = login.headers["Location"]
    assert authorize_url.startswith(f"https://{issuer.authority_host}/{issuer.tenant_id}/")
    assert f"scope=openid+profile+api%3A%2F%2F{issuer.client_id}%2F.default" in authorize_url
    callback = issuer.authorize(
        authorize_url, oid=str(uuid.uuid4()), username="staff@example.com", roles=[ADMIN]
    )
    landed = browser.get(callback, allow_redirects=False)
    assert landed.status_code == 302, landed.text
    assert urljoin(server.http, landed.headers["Location"]).endswith("/task-status")
    assert browser.get(f"{server.http}/task-status", timeout=10).status_code == 200
    admin = browser.get(f"{server.http}/admin/", allow_redirects=False, timeout=10)
    assert admin.status_code == 200
    code = callback.split("code=")[1].split("&")[0]
    assert code not in server.log()


def test_the_admin_login_sends_the_browser_to_entra_id(server):
    response = requests.get(f"{server.http}/admin/login/?next=/admin/", allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/oauth2/login?next=")


def test_a_bad_authorization_code_does_not_sign_in(server):
    browser = requests.Session()
    response = browser.get(f"{server.http}/oauth2/callback?code=forged&state=", timeout=10)
    assert response.status_code == 401
    assert browser.get(f"{server.http}/task-status", timeout=10).status_code == 401
