"""The workers' "running now" lists are shared by every reader (one cached snapshot):
each reader sees only the running tasks of operations they may see."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from operations import overview
from tasks.auth.bearer import issue_local_token

pytestmark = pytest.mark.django_db(transaction=True)

RUNNING = [
    {"task_id": "7d1c4c1e-0000-4000-8000-000000000001", "operation": "daily_sales", "since": 1},
    {"task_id": "7d1c4c1e-0000-4000-8000-000000000002", "operation": "transform_tips", "since": 2},
    {"task_id": "7d1c4c1e-0000-4000-8000-000000000003", "operation": "email_tips", "since": 3},
]


@pytest.fixture
def snapshot():
    """What the workers answered, as the schedule page and GET /operations read it."""
    workers = [{"name": "celery@a", "since": 1, "running": RUNNING}]
    taken = {"workers": workers, "queue": {}, "beat": None, "problems": []}
    cache.set(overview._SNAPSHOT_KEY, {"taken_at": time.time(), "snapshot": taken}, 60)
    yield
    cache.clear()


def running_ids(body: dict) -> set[str]:
    return {r["task_id"] for w in body["workers"] for r in w["running"]}


def test_get_operations_shows_running_tasks_only_of_visible_operations(api, snapshot):
    body = api.get("/operations").json()
    assert running_ids(body) == {RUNNING[0]["task_id"]}


def test_staff_see_every_running_task(admin_user, snapshot):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_local_token(admin_user)}")
    assert running_ids(client.get("/operations").json()) == {r["task_id"] for r in RUNNING}


def test_the_schedule_page_shows_running_tasks_only_of_visible_operations(
    client, user, admin_user, snapshot
):
    client.force_login(user)
    page = client.get("/schedule").content.decode()
    assert RUNNING[0]["task_id"] in page
    assert RUNNING[1]["task_id"] not in page and RUNNING[2]["task_id"] not in page
    client.force_login(admin_user)
    page = client.get("/schedule").content.decode()
    assert all(r["task_id"] in page for r in RUNNING)
