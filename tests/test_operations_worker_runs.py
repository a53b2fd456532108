"""email_tips and get_food_handler_links end to end: launched over REST, run by a real
Celery worker process, watched by a WebSocket client through a real daphne.

(transform_tips and update_food_handler_pdfs have theirs in their own modules.)
Each job's input is prepared by running its predecessor here, as a back office
would run them in turn.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import Group

from operations.models import TipShare, TipStatementDelivery
from tasks.auth.bearer import issue_local_token
from tests.support.celery_processes import celery_process, env_for
from tests.support.jobs import run_job
from tests.support.servers import Daphne
from tests.support.smtp_server import smtp_server
from tests.support.source_server import SAMPLE
from tests.support.watch import launch_and_watch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
WEEK1 = {"period_start": "2025-06-02", "period_end": "2025-06-08"}


def in_order(seen: list[dict]) -> list[str]:
    versions = [payload["version"] for payload in seen]
    assert versions == sorted(set(versions)), versions
    return [payload["status"] for payload in seen]


@pytest.fixture
def reader_runner(runner):
    for role in ("TaskStatus.Tips.Read", "TaskStatus.FoodHandler.Read"):
        runner.groups.add(Group.objects.get_or_create(name=role)[0])
    return runner


def test_email_tips_on_a_worker_sends_each_statement_and_a_client_watches(
    sample_sources, settings, reader_runner, queue, tmp_path
):
    settings.ROSTER_SOURCE_URL = f"file://{SAMPLE / 'roster'}"
    settings.TIP_POLICY_FILE = SAMPLE / "tips" / "policies.json"
    assert run_job("transform_tips", {**WEEK1, "locations": ["L01"]}).status == "completed"
    employees = set(TipShare.objects.values_list("employee_id", flat=True))
    with smtp_server() as smtp:
        env = env_for(
            queue,
            ROSTER_SOURCE_URL=settings.ROSTER_SOURCE_URL,
            EMAIL_HOST=smtp.host,
            EMAIL_PORT=str(smtp.port),
            EMAIL_USE_TLS="0",
            EMAIL_RATE_PER_SECOND="1000",
        )
        server = Daphne(env).start()
        try:
            with celery_process("worker", env, tmp_path, "ready."):
                seen = launch_and_watch(
                    server, issue_local_token(reader_runner), "email_tips", WEEK1
                )
        finally:
            server.stop()
        received = smtp.received
    statuses = in_order(seen)
    assert statuses[0] == "started" and statuses[-1] == "completed", seen[-1]
    assert "processing" in statuses
    assert seen[-1]["progress"]["current"] == seen[-1]["progress"]["total"] == len(employees)
    assert seen[-1]["result"]["sent"] == len(employees) == len(received)
    assert set(TipStatementDelivery.objects.values_list("employee_id", flat=True)) == employees


def test_food_handler_links_on_a_worker_link_to_the_stored_pdfs(
    settings, reader_runner, queue, tmp_path, client
):
    documents = tmp_path / "documents"
    settings.ROSTER_SOURCE_URL = f"file://{SAMPLE / 'roster'}"
    settings.STORAGES = {
        **settings.STORAGES,
        "documents": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(documents)},
        },
    }
    checked = run_job("update_food_handler_pdfs", {"locations": ["L02", "L03"]})
    assert checked.status == "completed_with_errors"  # L02-E015's certificate is truncated
    env = env_for(queue, DOCUMENT_STORAGE_OPTIONS=json.dumps({"location": str(documents)}))
    server = Daphne(env).start()
    try:
        with celery_process("worker", env, tmp_path, "ready."):
            seen = launch_and_watch(
                server, issue_local_token(reader_runner), "get_food_handler_links", {}
            )
    finally:
        server.stop()
    statuses = in_order(seen)
    assert statuses[0] == "started" and statuses[-1] == "completed", seen[-1]
    result = seen[-1]["result"]
    assert [loc["location_id"] for loc in result["locations"]] == ["L02", "L03"]
    client.force_login(reader_runner)
    packet = result["locations"][0]["packet"]["url"]
    response = client.get(packet)
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert b"".join(
        response.streaming_content if response.streaming else [response.content]
    ).startswith(b"%PDF")
    assert Path(documents).is_dir()
