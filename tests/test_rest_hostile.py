"""Hostile and sloppy HTTP input: always a clear JSON answer, never a 500, nothing written."""

from __future__ import annotations

import logging

import pytest

from tasks import tracker
from tasks.auth.bearer import issue_local_token
from tasks.models import TaskStatus

pytestmark = pytest.mark.django_db


def post_json(client, body: str, **headers):
    return client.post("/task-status", data=body, content_type="application/json", **headers)


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["detail"], str) and body["request_id"] == response["X-Request-ID"]
    return body


@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000, '{"a":' * 5000 + "1" + "}" * 5000])
def test_json_nested_too_deeply_is_400(client, runner, body):
    client.force_login(runner)
    detail = assert_json_error(post_json(client, body), 400)["detail"]
    assert "nested too deeply" in detail
    assert TaskStatus.objects.count() == 0


def test_a_body_over_the_upload_limit_is_413(client, runner, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    client.force_login(runner)
    body = '{"operation": "invoice_sync", "params": {"x": "' + "a" * 20_000 + '"}}'
    assert "too large" in assert_json_error(post_json(client, body), 413)["detail"]
    assert TaskStatus.objects.count() == 0


def test_too_many_query_parameters_is_400(api):
    query = "&".join(f"p{i}=1" for i in range(2000))
    assert_json_error(api.get(f"/task-status?limit=1&{query}"), 400)


@pytest.mark.parametrize("raw", ["１", "5\n", " 5", "5.0", "1e2", "+5"])
def test_limit_takes_ascii_digits_only(api, raw):
    body = assert_json_error(api.get("/task-status", {"limit": raw}), 400)
    assert body["parameter"] == "limit"


@pytest.mark.parametrize("raw", ["１", "-1", "1e9", "inf", "0x10", "12\n"])
def test_updated_since_takes_plain_unix_seconds_only(api, raw):
    body = assert_json_error(api.get("/task-status", {"updated_since": raw}), 400)
    assert body["parameter"] == "updated_since"


def test_updated_since_with_a_fraction_is_fine(api):
    tracker.create_task("daily_sales")
    assert len(api.get("/task-status", {"updated_since": "0.5"}).json()) == 1


def launch(client, body, **headers):
    return client.post("/task-status", body, content_type="application/json", **headers)


def test_a_repeat_with_the_same_key_carries_the_location(client, runner):
    client.force_login(runner)
    body = {"operation": "daily_sales", "params": {"business_date": "2025-06-10"}}
    first = launch(client, body, HTTP_IDEMPOTENCY_KEY="k-1")
    again = launch(client, body, HTTP_IDEMPOTENCY_KEY="k-1")
    assert again.status_code == 200
    assert again["Location"] == first["Location"]


@pytest.mark.parametrize(
    "other",
    [
        {"operation": "invoice_sync", "params": {}},
        {"operation": "daily_sales", "params": {"business_date": "2025-06-11"}},
    ],
)
def test_a_key_reused_for_a_different_launch_is_422_and_launches_nothing(client, runner, other):
    client.force_login(runner)
    first = launch(
        client,
        {"operation": "daily_sales", "params": {"business_date": "2025-06-10"}},
        HTTP_IDEMPOTENCY_KEY="k-2",
    )
    assert first.status_code == 202
    response = launch(client, other, HTTP_IDEMPOTENCY_KEY="k-2")
    assert "different launch" in assert_json_error(response, 422)["detail"]
    assert TaskStatus.objects.count() == 1


@pytest.mark.parametrize("key", ["", "x" * 201, "clé"])
def test_a_bad_idempotency_key_is_400_naming_the_header(client, runner, key):
    client.force_login(runner)
    response = launch(client, {"operation": "invoice_sync", "params": {}}, HTTP_IDEMPOTENCY_KEY=key)
    assert "Idempotency-Key" in assert_json_error(response, 400)["detail"]
    assert TaskStatus.objects.count() == 0


def test_cancelling_twice_writes_once_and_keeps_the_first_author(client, runner):
    from operations.runner import claim

    client.force_login(runner)
    task = tracker.create_task("daily_sales")
    claim(task.task_id, "daily_sales", "worker:1")  # running: the job stops at its next step
    first = client.post(f"/task-status/{task.task_id}/cancel")
    again = client.post(f"/task-status/{task.task_id}/cancel")
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["version"] == again.json()["version"] == 2
    assert TaskStatus.objects.get(pk=task.task_id).cancel_requested_by == "runner"


def test_cancelling_a_queued_task_twice_ends_it_once(client, runner):
    client.force_login(runner)
    task = tracker.create_task("daily_sales")
    first = client.post(f"/task-status/{task.task_id}/cancel")
    again = client.post(f"/task-status/{task.task_id}/cancel")
    assert first.status_code == 202 and first.json()["status"] == "failed"
    assert "already" in assert_json_error(again, 409)["detail"]
    row = TaskStatus.objects.get(pk=task.task_id)
    assert row.version == first.json()["version"] == 3, "the request, then the end"


def test_api_docs_refuse_in_json_without_credentials(client):
    assert_json_error(client.get("/api/docs"), 401)


def test_api_docs_answer_a_json_only_client_in_json(client, runner):
    client.force_login(runner)
    assert_json_error(client.get("/api/docs", HTTP_ACCEPT="application/json"), 406)
    assert client.get("/api/docs").status_code == 200


def test_unknown_paths_are_json_404(client):
    for path in ("/no-such-page", "/task-status/a/b/c", "/static/"):
        assert_json_error(client.get(path), 404)


def test_every_request_logs_an_access_line_with_its_request_id(api, caplog):
    with caplog.at_level(logging.INFO, logger="tasks.access"):
        response = api.get("/task-status", HTTP_X_REQUEST_ID="trace-7")
    assert response.status_code == 200
    lines = [r for r in caplog.records if r.name == "tasks.access"]
    assert len(lines) == 1
    assert lines[0].request_id == "trace-7"
    assert "GET /task-status" in lines[0].getMessage() and " 200 " in lines[0].getMessage()


@pytest.mark.parametrize(
    "path",
    [
        "/admin/tasks/taskstatus/?operation__exact=%00",
        "/task-status?operation=%00",
        "/?status=%00",
    ],
)
def test_a_nul_byte_in_the_query_string_is_400_on_every_door(client, admin_user, path):
    client.force_login(admin_user)
    assert "NUL" in assert_json_error(client.get(path), 400)["detail"]


def test_a_session_cookie_with_a_nul_byte_is_no_session(client, runner):
    client.cookies["sessionid"] = "abcdefgh\x00"
    assert_json_error(client.get("/task-status"), 401)
    token = issue_local_token(runner)
    response = client.get("/task-status", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content[:300]
