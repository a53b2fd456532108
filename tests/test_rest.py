"""Every REST path, filter and error of the contract."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from operations.runner import claim
from tasks import tracker
from tasks.live import broadcast
from tasks.models import Operation, TaskStatus

pytestmark = pytest.mark.django_db

DOCUMENT_KEYS = {
    "task_id",
    "operation",
    "status",
    "progress",
    "result",
    "error",
    "created_at",
    "updated_at",
    "version",
}


def make(operation="daily_sales", *, finish=None, total=None):
    handle = tracker.create_task(operation, total=total)
    if finish == "completed":
        handle.complete({"rows": 3})
    elif finish == "failed":
        handle.fail("boom")
    return handle.task_id


def next_url(response) -> str | None:
    match = re.match(r'<([^>]+)>; rel="next"', response.get("Link", ""))
    return match.group(1) if match else None


@pytest.mark.parametrize("path", ["/task-status/{}", "/task-status/{}/"])
def test_get_by_id_answers_both_slash_forms_with_the_document(api, path):
    task_id = make(finish="completed", total=3)
    response = api.get(path.format(task_id))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == DOCUMENT_KEYS
    assert body["task_id"] == task_id
    assert body["status"] == "completed"
    assert body["result"] == {"rows": 3}
    assert isinstance(body["created_at"], int) and isinstance(body["updated_at"], int)
    assert body["version"] == 2


@pytest.mark.parametrize("path", ["/task-status", "/task-status/"])
def test_list_answers_both_slash_forms_newest_first(api, path):
    first = make()
    second = make("invoice_sync")
    response = api.get(path)
    assert response.status_code == 200
    assert [doc["task_id"] for doc in response.json()] == [second, first]


@pytest.mark.parametrize(
    "task_id", ["nope", "6a0d3f34-5b8e-4f0e-9a51-0c2b1f7e9d11", "1' OR '1'='1", "%00", "a" * 300]
)
def test_unknown_or_malformed_ids_are_404_json(api, task_id):
    response = api.get(f"/task-status/{task_id}")
    assert response.status_code == 404
    body = response.json()
    assert body["request_id"] == response["X-Request-ID"]
    assert isinstance(body["detail"], str)


@override_settings(TASK_STATUS_TTL=1)
def test_an_expired_task_is_404_and_gone_from_lists(api):
    task_id = make()
    time.sleep(1.1)
    assert api.get(f"/task-status/{task_id}").status_code == 404
    assert api.get("/task-status").json() == []


def test_filter_by_operation(api):
    make("daily_sales")
    wanted = make("invoice_sync")
    body = api.get("/task-status?operation=invoice_sync").json()
    assert [doc["task_id"] for doc in body] == [wanted]


def test_unknown_operation_is_400_naming_the_seven(api):
    response = api.get("/task-status?operation=payroll")
    assert response.status_code == 400
    for name in Operation.values:
        assert name in response.json()["detail"]


def test_filter_by_status_list(api):
    done = make(finish="completed")
    failed = make(finish="failed")
    make()
    body = api.get("/task-status?status=completed,failed").json()
    assert {doc["task_id"] for doc in body} == {done, failed}
    assert api.get("/task-status?status=finished").status_code == 400


def test_updated_since_is_inclusive(api):
    task_id = make()
    updated_at = api.get(f"/task-status/{task_id}").json()["updated_at"]
    assert [d["task_id"] for d in api.get(f"/task-status?updated_since={updated_at}").json()] == [
        task_id
    ]
    assert api.get(f"/task-status?updated_since={updated_at + 2}").json() == []


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=1000000000", "limit"),
        ("limit=ten", "limit"),
        ("updated_since=yesterday", "updated_since"),
        ("updated_since=nan", "updated_since"),
        ("cursor=forged", "cursor"),
        ("status=", "status"),
    ],
)
def test_malformed_parameters_are_400_naming_them(api, query, name):
    response = api.get(f"/task-status?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["detail"].startswith(name)
    assert body["request_id"] == response["X-Request-ID"]


def test_pages_follow_the_link_header_to_the_end_without_overlap(api):
    made = [make() for _ in range(7)]
    seen = []
    url = "/task-status?limit=3"
    pages = 0
    while url:
        response = api.get(url)
        assert response.status_code == 200
        seen += [doc["task_id"] for doc in response.json()]
        url = next_url(response)
        pages += 1
    assert pages == 3
    assert seen == list(reversed(made))


def test_a_cursor_is_bound_to_its_filters(api):
    for _ in range(3):
        make("invoice_sync")
    response = api.get("/task-status?operation=invoice_sync&limit=1")
    cursor = re.search(r"cursor=([^&>]+)", response["Link"]).group(1)
    other = api.get(f"/task-status?operation=daily_sales&limit=1&cursor={cursor}")
    assert other.status_code == 400
    assert other.json()["detail"].startswith("cursor")


def test_a_tampered_cursor_is_400(api):
    for _ in range(2):
        make()
    cursor = re.search(r"cursor=([^&>]+)", api.get("/task-status?limit=1")["Link"]).group(1)
    tampered = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    assert api.get(f"/task-status?limit=1&cursor={tampered}").status_code == 400


def test_etag_and_if_none_match_give_304_until_the_task_changes(api):
    handle = tracker.create_task("daily_sales", total=2)
    first = api.get(f"/task-status/{handle.task_id}")
    etag = first["ETag"]
    again = api.get(f"/task-status/{handle.task_id}", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert again["X-Request-ID"]
    handle.progress(1)
    changed = api.get(f"/task-status/{handle.task_id}", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200
    assert changed["ETag"] != etag


def test_a_sane_request_id_is_echoed_and_an_insane_one_replaced(api):
    assert api.get("/task-status", HTTP_X_REQUEST_ID="abc-123.x_y")["X-Request-ID"] == (
        "abc-123.x_y"
    )
    replaced = api.get("/task-status", HTTP_X_REQUEST_ID="bad id <script>")["X-Request-ID"]
    assert str(uuid.UUID(replaced)) == replaced


def test_request_id_is_on_errors_and_unknown_paths(client):
    response = client.get("/no-such-path")
    assert response.status_code == 404
    assert response.json()["request_id"] == response["X-Request-ID"]


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer ", "Bearer nope", "Bearer tsk_unknown", "Basic abc", "Bearer a b"],
)
def test_missing_or_bad_credentials_are_401_with_www_authenticate(client, header):
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = client.get("/task-status", **extra)
    if header == "Basic abc":
        assert response.status_code == 401
    else:
        assert response.status_code == 401, header
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["request_id"] == response["X-Request-ID"]


def test_session_login_reads_the_api(client, user):
    client.force_login(user)
    assert client.get("/task-status").status_code == 200


def test_schema_and_docs_need_credentials(api, client):
    assert client.get("/api/schema").status_code == 401
    schema = api.get("/api/schema")
    assert schema.status_code == 200
    assert b"/task-status/{task_id}" in schema.content
    assert api.get("/api/docs").status_code == 200


def test_the_schema_is_valid_with_no_warning_and_knows_each_operation_s_parameters(tmp_path):
    """drf-spectacular fails on any warning: an undocumented view or authenticator."""
    out = tmp_path / "schema.json"
    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--format",
        "openapi-json",
        "--file",
        str(out),
    )
    schema = json.loads(out.read_text())
    launch = schema["components"]["schemas"]["LaunchRequest"]
    assert set(launch["discriminator"]["mapping"]) == set(Operation.values)
    tips = schema["components"]["schemas"]["TransformTipsLaunch"]["properties"]["params"]
    params = schema["components"]["schemas"][tips["$ref"].rsplit("/", 1)[-1]]["properties"]
    assert {"period_start", "period_end", "locations"} <= set(params)
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "session"}
    assert "/task-status/{task_id}/events" in schema["paths"]  # as the contract writes it
    stats = schema["paths"]["/operations/{operation}/stats"]["get"]["responses"]["200"]
    assert "OperationStats" in json.dumps(stats)


def test_health_needs_no_credentials(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_readyz_is_503_when_redis_is_unreachable(client):

    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        broadcast._client = None
        try:
            response = client.get("/readyz")
        finally:
            broadcast._client = None
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("unavailable")


def test_cancel_needs_the_runner_role(api):
    task_id = make()
    response = api.post(f"/task-status/{task_id}/cancel")
    assert response.status_code == 403
    assert response.json()["request_id"]


def test_a_runner_cancels_and_a_finished_task_is_409(client, runner):

    client.force_login(runner)
    queued = make()
    response = client.post(f"/task-status/{queued}/cancel")
    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["error"]) == ("failed", "cancelled by runner before it started")
    running = make()
    claim(running, "daily_sales", "worker:1")
    response = client.post(f"/task-status/{running}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "started", "a running job stops at its next step"
    assert TaskStatus.objects.get(pk=running).cancel_requested_by == "runner"
    finished = make(finish="completed")
    conflict = client.post(f"/task-status/{finished}/cancel/")
    assert conflict.status_code == 409
    assert client.post(f"/task-status/{uuid.uuid4()}/cancel").status_code == 404


def test_post_with_non_json_body_is_a_clear_400(client, runner):
    client.force_login(runner)
    response = client.post("/task-status", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["request_id"]


def launch(client, body, **headers):
    return client.post("/task-status", body, content_type="application/json", **headers)


def test_a_runner_launches_a_run_and_gets_202_location_and_the_document(client, runner):
    client.force_login(runner)
    response = launch(client, {"operation": "invoice_sync", "params": {}})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "started" and body["version"] == 1
    assert response["Location"].endswith(f"/task-status/{body['task_id']}")


def test_a_repeated_launch_with_an_idempotency_key_returns_the_same_task(client, runner):
    client.force_login(runner)
    body = {"operation": "invoice_sync", "params": {}}
    first = launch(client, body, HTTP_IDEMPOTENCY_KEY="sync-42")
    again = launch(client, body, HTTP_IDEMPOTENCY_KEY="sync-42")
    other = launch(client, body, HTTP_IDEMPOTENCY_KEY="sync-43")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["task_id"] == first.json()["task_id"]
    assert other.json()["task_id"] != first.json()["task_id"]


def test_launching_an_unknown_operation_names_the_seven(client, runner):
    client.force_login(runner)
    response = launch(client, {"operation": "payroll"})
    assert response.status_code == 400
    message = json.dumps(response.json())
    assert all(name in message for name in Operation.values)


def test_launching_email_tips_with_a_bad_period_is_400_naming_the_field(client, runner):
    runner.groups.add(Group.objects.get_or_create(name="TaskStatus.Tips.Read")[0])
    client.force_login(runner)
    response = launch(
        client,
        {
            "operation": "email_tips",
            "params": {"period_start": "2025-06-08", "period_end": "2025-06-02"},
        },
    )
    assert response.status_code == 400, response.content
    assert response.json()["errors"]["period_end"] == ["is before period_start"]


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"period_end": "0001-01-03"}, "period_end", "is before 2000-01-01"),
        ({"period_start": "9999-12-30"}, "period_start", "is in the future"),
        ({"period_start": "2025-06-01", "period_end": "2025-07-15"}, "period_end", "at most 31"),
        ({"period_start": "2999-01-01"}, "period_start", "is in the future"),
    ],
)
def test_a_pay_period_out_of_range_is_400_naming_the_field(client, runner, params, field, reason):
    runner.groups.add(Group.objects.get_or_create(name="TaskStatus.Tips.Read")[0])
    client.force_login(runner)
    response = launch(client, {"operation": "transform_tips", "params": params})
    assert response.status_code == 400, response.content
    assert reason in json.dumps(response.json()["errors"][field])


def test_a_pay_period_defaults_to_the_previous_week_monday_to_sunday(client, runner):

    runner.groups.add(Group.objects.get_or_create(name="TaskStatus.Tips.Read")[0])
    client.force_login(runner)
    response = launch(client, {"operation": "transform_tips", "params": {}})
    assert response.status_code == 202, response.content
    params = TaskStatus.objects.get(task_id=response.json()["task_id"]).params
    today = timezone.localdate()
    monday = today - timedelta(days=today.weekday() + 7)
    assert params["period_start"] == monday.isoformat()
    assert params["period_end"] == (monday + timedelta(days=6)).isoformat()


@pytest.mark.parametrize(
    "params",
    [
        {"business_date": "yesterday"},
        {"business_date": "2999-01-01"},
        {"business_date": "1999-12-31"},
        {"business_date": "0001-01-01"},
        {"locations": ["NOPE"]},
        {"colour": "red"},
    ],
)
def test_bad_parameters_are_400_with_field_errors(client, runner, params):
    client.force_login(runner)
    response = launch(client, {"operation": "daily_sales", "params": params})
    assert response.status_code == 400, response.content
    assert response.json()["request_id"]


def test_params_that_are_not_an_object_are_400(client, runner):
    client.force_login(runner)
    assert launch(client, {"operation": "daily_sales", "params": [1]}).status_code == 400


def test_a_reader_cannot_launch(api):
    response = api.post("/task-status", {"operation": "invoice_sync"}, format="json")
    assert response.status_code == 403
