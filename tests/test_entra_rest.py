"""Entra ID mode on REST, against a real HTTPS issuer on loopback: nothing is mocked.

Settings are switched to Entra ID mode with pytest-django's ``settings`` fixture;
the validator notices the changed configuration and starts with empty caches.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from accounts.entra import keys, tokens
from accounts.models import EntraIdentity
from tasks import tracker
from tasks.auth.bearer import InvalidToken, authenticate_bearer
from tasks.auth.permissions import can_run
from tests.support.forgery import FORGERIES
from tests.support.issuer import SigningKey, TestIssuer

pytestmark = pytest.mark.django_db

RUNNER = "TaskStatus.Run"
ADMIN = "TaskStatus.Admin"
INVALID = 'Bearer realm="task-status", error="invalid_token"'


@pytest.fixture(scope="module")
def issuer():
    with TestIssuer() as running:
        yield running


@pytest.fixture
def entra_mode(settings, issuer):
    for name, value in issuer.settings().items():
        setattr(settings, name, value)
    settings.AZURE_AUDIENCE = issuer.audience
    tokens.reset_entra_state()
    issuer.down = False
    yield issuer
    issuer.down = False
    tokens.reset_entra_state()


def client_with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_a_good_token_of_either_version_reads_tasks(entra_mode, version):
    response = client_with(entra_mode.token(version=version)).get("/task-status")
    assert response.status_code == 200, response.content
    assert response.json() == []


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_token_is_401_invalid_token_without_detail(entra_mode, forgery):
    response = client_with(FORGERIES[forgery](entra_mode)).get("/task-status")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == INVALID
    assert response.json()["detail"] == "invalid or expired token"


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer a b"])
def test_an_empty_or_malformed_bearer_is_401_invalid_token(entra_mode, header):
    response = APIClient().get("/task-status", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == INVALID


def test_no_credentials_is_401_with_a_bearer_challenge(entra_mode):
    response = APIClient().get("/task-status")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_local_api_token_is_refused_in_entra_mode(entra_mode, token):
    assert client_with(token).get("/task-status").status_code == 401


def test_a_reader_cannot_launch(entra_mode):
    response = client_with(entra_mode.token()).post(
        "/task-status", {"operation": "daily_sales", "params": {}}, format="json"
    )
    assert response.status_code == 403


def test_a_runner_can_launch(entra_mode):
    response = client_with(entra_mode.token(roles=[RUNNER], username="run@example.com")).post(
        "/task-status", {"operation": "daily_sales", "params": {}}, format="json"
    )
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "started"


def test_the_token_in_hand_decides_not_a_later_tokens_roles(entra_mode):
    """An older reader token stays a reader after a runner token of the same user."""
    oid = str(uuid.uuid4())
    reader_token = entra_mode.token(oid=oid, username="two@example.com")
    runner_token = entra_mode.token(oid=oid, username="two@example.com", roles=[RUNNER])
    launch = {"operation": "daily_sales", "params": {}}
    assert client_with(reader_token).post("/task-status", launch, format="json").status_code == 403
    assert client_with(runner_token).post("/task-status", launch, format="json").status_code == 202
    assert client_with(reader_token).post("/task-status", launch, format="json").status_code == 403


def test_roles_map_to_groups_and_staff_and_follow_the_latest_token(entra_mode):
    oid = str(uuid.uuid4())
    admin = authenticate_bearer(entra_mode.token(oid=oid, roles=[RUNNER, ADMIN]))
    assert admin.roles == frozenset({RUNNER, ADMIN})
    user = get_user_model().objects.get(pk=admin.user.pk)
    assert user.is_staff and can_run(user)
    assert set(user.groups.values_list("name", flat=True)) == {RUNNER, ADMIN}

    reader = authenticate_bearer(entra_mode.token(oid=oid))
    assert reader.user.pk == admin.user.pk and reader.roles == frozenset()
    user.refresh_from_db()
    assert not user.is_staff and not can_run(user)
    assert not user.groups.exists()


def test_users_are_keyed_on_oid_and_tid_not_on_the_name(entra_mode):
    oid = str(uuid.uuid4())
    first = authenticate_bearer(entra_mode.token(oid=oid, username="old@example.com")).user
    renamed = authenticate_bearer(entra_mode.token(oid=oid, username="new@example.com")).user
    assert renamed.pk == first.pk and renamed.username == "new@example.com"
    # Another account that claims the same name is another user.
    other = authenticate_bearer(entra_mode.token(username="new@example.com")).user
    assert other.pk != first.pk and other.username != "new@example.com"
    assert EntraIdentity.objects.filter(object_id=oid, tenant_id=entra_mode.tenant_id).count() == 1


def test_a_v1_token_without_preferred_username_is_named_from_upn(entra_mode):
    identity = authenticate_bearer(entra_mode.token(version="1.0", username="upn@example.com"))
    assert identity.user.username == "upn@example.com"


def test_a_local_user_is_never_taken_over_by_name(entra_mode, django_user_model):
    local = django_user_model.objects.create_superuser("boss@example.com", password="pw")
    identity = authenticate_bearer(entra_mode.token(username="boss@example.com"))
    assert identity.user.pk != local.pk
    assert not identity.user.is_superuser


def test_a_known_token_costs_no_database_query(entra_mode, django_assert_num_queries):
    token = entra_mode.token(roles=[RUNNER])
    first = authenticate_bearer(token)
    with django_assert_num_queries(0):
        again = authenticate_bearer(token)
    assert again == first and again.expires_at == first.expires_at


def test_a_new_token_of_a_known_user_writes_nothing_when_nothing_changed(
    entra_mode, django_assert_max_num_queries
):
    oid = str(uuid.uuid4())
    authenticate_bearer(entra_mode.token(oid=oid, roles=[RUNNER]))
    # One read of the link, one of the groups: no UPDATE, no INSERT.
    with django_assert_max_num_queries(2) as queries:
        authenticate_bearer(entra_mode.token(oid=oid, roles=[RUNNER]))
    sql = " ".join(q["sql"].upper() for q in queries.captured_queries)
    assert "UPDATE" not in sql and "INSERT" not in sql and "DELETE" not in sql


def test_keys_are_fetched_once_not_per_request(entra_mode):
    before = entra_mode.jwks_requests()
    for _ in range(5):
        client = client_with(entra_mode.token())
        assert client.get("/task-status").status_code == 200
    assert entra_mode.jwks_requests() - before == 1


def test_a_rotated_key_is_accepted_without_a_restart(entra_mode):
    assert client_with(entra_mode.token()).get("/task-status").status_code == 200
    # Even right after a forged kid spent a reload.
    assert client_with(FORGERIES["unknown_kid"](entra_mode)).get("/task-status").status_code == 401
    entra_mode.rotate()
    before = entra_mode.jwks_requests()
    assert client_with(entra_mode.token()).get("/task-status").status_code == 200
    assert entra_mode.jwks_requests() - before == 1


def test_forged_kids_cannot_hammer_the_issuer(entra_mode):
    assert client_with(entra_mode.token()).get("/task-status").status_code == 200
    before = entra_mode.jwks_requests()
    for _ in range(30):
        forged = entra_mode.sign(entra_mode.claims(), key=SigningKey(kid=uuid.uuid4().hex))
        assert client_with(forged).get("/task-status").status_code == 401
    assert entra_mode.jwks_requests() - before <= keys.REFRESH_BURST


def test_the_same_unknown_kid_reloads_the_keys_at_most_once(entra_mode):
    assert client_with(entra_mode.token()).get("/task-status").status_code == 200
    forged = FORGERIES["unknown_kid"](entra_mode)
    before = entra_mode.jwks_requests()
    for _ in range(10):
        assert client_with(forged).get("/task-status").status_code == 401
    assert entra_mode.jwks_requests() - before == 1


def test_tokens_refused_before_signature_checks_cost_no_issuer_call(entra_mode):
    assert client_with(entra_mode.token()).get("/task-status").status_code == 200
    before = sum(entra_mode.requests.values())
    for name in ("garbage", "alg_none", "hs256_with_public_key", "other_tenant", "expired"):
        assert client_with(FORGERIES[name](entra_mode)).get("/task-status").status_code == 401
    assert sum(entra_mode.requests.values()) == before


def test_issuer_down_cached_keys_keep_working_new_keys_fail_closed(entra_mode, caplog):
    assert client_with(entra_mode.token()).get("/task-status").status_code == 200
    entra_mode.down = True
    assert (
        client_with(entra_mode.token(username="x@example.com")).get("/task-status").status_code
        == 200
    )
    entra_mode.rotate()
    with caplog.at_level(logging.ERROR, logger="accounts.entra.keys"):
        response = client_with(entra_mode.token()).get("/task-status")
    assert response.status_code == 401
    assert "Entra ID keys could not be loaded" in caplog.text
    entra_mode.down = False


def test_an_issuer_down_from_the_start_refuses_every_token(entra_mode, caplog):
    entra_mode.down = True
    with caplog.at_level(logging.ERROR, logger="accounts.entra.keys"):
        with pytest.raises(InvalidToken):
            authenticate_bearer(entra_mode.token())
    assert "Entra ID keys could not be loaded" in caplog.text


def test_the_configured_ca_wins_over_requests_ca_bundle(entra_mode, monkeypatch):
    # Point both at a public CA store, which does not trust the test CA (as set here).
    import requests.certs

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    monkeypatch.setenv("CURL_CA_BUNDLE", requests.certs.where())
    assert authenticate_bearer(entra_mode.token()).user.is_authenticated


def test_an_untrusted_authority_certificate_fails_closed(entra_mode, settings):
    settings.AZURE_CA_BUNDLE = ""
    with pytest.raises(InvalidToken):
        authenticate_bearer(entra_mode.token())


def test_refusals_never_log_the_token(entra_mode, caplog):
    forged = FORGERIES["tampered_signature"](entra_mode)
    with caplog.at_level(logging.DEBUG):
        client_with(forged).get("/task-status")
    signature = forged.rsplit(".", 1)[1]
    assert signature not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_requests_of_one_account_make_one_user(entra_mode):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    oid = str(uuid.uuid4())
    tokens = [entra_mode.token(oid=oid, roles=[RUNNER]) for _ in range(8)]
    authenticate_bearer(entra_mode.token())  # keys loaded before the race

    def first_request(token: str) -> int:
        try:
            return authenticate_bearer(token).user.pk
        finally:
            connection.close()

    with ThreadPoolExecutor(len(tokens)) as pool:
        pks = set(pool.map(first_request, tokens))
    assert len(pks) == 1
    assert get_user_model().objects.filter(entra_identity__object_id=oid).count() == 1


def test_a_key_rotated_while_the_issuer_was_down_is_accepted_once_it_is_back(entra_mode):
    assert client_with(entra_mode.token()).get("/task-status").status_code == 200
    entra_mode.down = True
    entra_mode.rotate()
    token = entra_mode.token()
    assert client_with(token).get("/task-status").status_code == 401
    entra_mode.down = False
    assert client_with(token).get("/task-status").status_code == 200


def test_personal_data_follows_the_reader_role_in_the_token_in_hand(entra_mode):
    """Tips tasks exist only for a token that holds TaskStatus.Tips.Read (an app role);
    the food handler role does not open them, and the same user's older token neither."""
    tips = tracker.create_task("transform_tips").task_id
    sales = tracker.create_task("daily_sales").task_id
    oid = str(uuid.uuid4())
    plain = client_with(entra_mode.token(oid=oid, username="pay@example.com"))
    food = client_with(entra_mode.token(roles=["TaskStatus.FoodHandler.Read"]))
    holder = client_with(
        entra_mode.token(oid=oid, username="pay@example.com", roles=["TaskStatus.Tips.Read"])
    )
    assert holder.get(f"/task-status/{tips}").status_code == 200
    assert {d["task_id"] for d in holder.get("/task-status").json()} == {tips, sales}
    for other in (plain, food):
        assert other.get(f"/task-status/{tips}").status_code == 404
        assert [d["task_id"] for d in other.get("/task-status").json()] == [sales]
        assert other.get("/task-status?operation=transform_tips").json() == []
