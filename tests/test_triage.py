"""Triage: failures grouped by folded error, acknowledged with a note, counted when not."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from operations import triage
from operations.models import FailureAcknowledgement
from tasks import tracker
from tasks.auth.bearer import issue_local_token

pytestmark = pytest.mark.django_db(transaction=True)


def failed(operation: str, error: str) -> str:
    handle = tracker.create_task(operation, launched_by="schedule")
    handle.fail(error)
    return handle.task_id


def test_failures_are_grouped_acknowledged_and_counted(runner, django_user_model):
    cache.clear()
    first = failed("daily_sales", "sales source unusable: L03: HTTP 503 (gave up after 5 attempts)")
    second = failed(
        "daily_sales", "sales source unusable: L07: HTTP 502 (gave up after 2 attempts)"
    )
    other = failed("daily_sales", "no sales data for 2025-06-10")
    failed("transform_tips", "employee E0042 (Jane Doe): no eligible hours")  # personal data
    done = tracker.create_task("daily_sales")
    done.complete({})

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_local_token(runner)}")
    groups = api.get("/operations/daily_sales/stats").json()["failure_groups"]
    assert [(g["error"], g["count"], g["unacknowledged"]) for g in groups] == [
        ("no sales data for <date>", 1, 1),
        ("sales source unusable: <id>: HTTP <n> (gave up after <n> attempts)", 2, 2),
    ]
    assert groups[1]["last_task_id"] == second and groups[0]["last_task_id"] == other
    assert api.get("/operations/transform_tips/stats").status_code == 404  # not for a runner

    client = Client()
    client.force_login(runner)
    assert "3 failed runs not acknowledged" in client.get("/").content.decode()
    page = client.get("/schedule").content.decode()
    assert "2 × <q>sales source unusable: &lt;id&gt;: HTTP &lt;n&gt;" in page
    assert "2 not acknowledged" in page

    page = client.get(f"/tasks/{first}").content.decode()
    assert 'data-field="acknowledge"' in page
    response = client.post(f"/tasks/{first}/acknowledge", {"note": "source back; rerun done"})
    assert response.status_code == 302
    client.post(f"/tasks/{first}/acknowledge", {"note": "again"})  # the first one stays
    page = client.get(f"/tasks/{first}").content.decode()
    assert 'data-field="acknowledged">Acknowledged by runner at ' in page
    assert ": source back; rerun done</p>" in page
    ack = FailureAcknowledgement.objects.get(task_id=first)
    assert (ack.by, ack.note, ack.operation) == ("runner", "source back; rerun done", "daily_sales")
    groups = triage.failure_groups("daily_sales")
    assert [g["unacknowledged"] for g in groups] == [1, 1]
    cache.clear()
    assert "2 failed runs not acknowledged" in client.get("/").content.decode()

    # Only a runner acknowledges, only a failed run, only one the user may see.
    reader = django_user_model.objects.create_user("reader", password="pw")
    as_reader = Client()
    as_reader.force_login(reader)
    assert as_reader.post(f"/tasks/{second}/acknowledge", {"note": "x"}).status_code == 403
    assert client.post(f"/tasks/{done.task_id}/acknowledge").status_code == 302
    assert not FailureAcknowledgement.objects.filter(task_id=done.task_id).exists()
    tips = failed("transform_tips", "employee E0042 (Jane Doe): no eligible hours")
    assert client.post(f"/tasks/{tips}/acknowledge").status_code == 404
