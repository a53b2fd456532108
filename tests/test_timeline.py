"""A task's timeline: every status change with its time, version, progress and error,
kept beside the document, readable like the task, purged with it, live on its page."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect
from rest_framework.test import APIClient

from tasks import tracker
from tasks.auth.bearer import issue_local_token
from tasks.models import TaskEvent
from tests.support import browser as chromium
from tests.support.browser import log_in, watch
from tests.support.servers import Daphne, service_env

pytestmark = pytest.mark.django_db(transaction=True)
browser, context = chromium.browser, chromium.context


def events(api: APIClient, task_id: str) -> list[dict]:
    response = api.get(f"/task-status/{task_id}/events")
    assert response.status_code == 200, response.content
    return response.json()


def test_every_status_change_and_every_error_is_kept_in_order(api, settings):
    settings.TASK_PROGRESS_MIN_INTERVAL = 0  # every progress written, none folded into the next
    handle = tracker.create_task("daily_sales", total=3)
    handle.progress(1, "L01")
    handle.progress(1, "L01 again")  # no status change: no entry
    handle.error("L02: file missing")
    handle.progress(2, "L03")
    handle.error("L04: corrupt")
    handle.complete({"ok": True})
    got = events(api, handle.task_id)
    assert [e["status"] for e in got] == [
        "started",
        "processing",
        "error",
        "processing",
        "error",
        "completed_with_errors",
    ]
    assert [e["error"] for e in got if e["status"] == "error"] == [
        "L02: file missing",
        "L04: corrupt",
    ]
    document = api.get(f"/task-status/{handle.task_id}").json()
    assert got[-1]["version"] == document["version"]  # written with the change itself
    assert [e["version"] for e in got] == sorted({e["version"] for e in got})
    assert got[1]["progress"] == {"current": 1, "total": 3, "message": "L01"}
    assert all(
        set(e) == {"version", "at", "kind", "status", "progress", "error", "by"} for e in got
    )


def test_a_cancel_request_and_worker_lost_are_on_it():
    from operations import runner

    handle = tracker.create_task("invoice_sync")
    handle.progress(0, "reading")
    tracker.request_cancel(handle.task_id, by="alice")
    runner._fail_task(handle.task_id, "worker lost: w1 stopped renewing its lease")
    rows = list(TaskEvent.objects.filter(task_id=handle.task_id).order_by("version"))
    assert [(r.kind, r.status) for r in rows] == [
        ("status", "started"),
        ("status", "processing"),
        ("cancel_requested", "processing"),
        ("status", "failed"),
    ]
    assert rows[2].by == "alice" and rows[3].error.startswith("worker lost")


def test_the_timeline_has_the_task_s_visibility(api, django_user_model):
    tips = tracker.create_task("transform_tips")
    assert api.get(f"/task-status/{tips.task_id}/events").status_code == 404
    assert api.get("/task-status/not-a-uuid/events").status_code == 404
    reader = django_user_model.objects.create_user("tips-reader")
    reader.groups.add(Group.objects.get_or_create(name="TaskStatus.Tips.Read")[0])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_local_token(reader)}")
    assert [e["status"] for e in events(client, tips.task_id)] == ["started"]


def test_the_purge_takes_the_timeline_with_the_task(settings):
    gone = tracker.create_task("daily_sales")
    gone.complete()
    kept = tracker.create_task("daily_sales")
    assert tracker.purge_expired(now=time.time() + settings.TASK_STATUS_TTL + 5) == 2
    assert not TaskEvent.objects.filter(task_id__in=[gone.task_id, kept.task_id]).exists()
    fresh = tracker.create_task("daily_sales")
    assert tracker.purge_expired() == 0
    assert TaskEvent.objects.filter(task_id=fresh.task_id).count() == 1


@pytest.mark.browser
def test_the_task_page_shows_the_timeline_and_a_new_error_as_it_happens(context, staff_user):
    handle = tracker.create_task("daily_sales", total=4)
    handle.progress(1, "L01")
    handle.error("L02: sales file missing")
    server = Daphne(service_env(DEBUG="0")).start()
    try:
        log_in(context, server.http, staff_user)
        page = watch(context.new_page()).page
        page.goto(f"{server.http}/tasks/{handle.task_id}")
        items = page.locator('[data-field="timeline"] li')
        expect(items).to_have_count(3)
        expect(items.nth(2)).to_contain_text("L02: sales file missing")
        handle.progress(3, "L03")
        handle.error("L04: corrupt file")  # a second error: both stay on the timeline
        expect(items).to_have_count(5)
        expect(items.nth(4)).to_contain_text("L04: corrupt file")
        expect(items.nth(2)).to_contain_text("L02: sales file missing")
        handle.error("L04: corrupt file")  # the same words again: still an entry of its own
        expect(items).to_have_count(6)
        expect(items.nth(5)).to_contain_text("L04: corrupt file")
        tracker.request_cancel(str(handle.task_id), by="boss")  # the status does not move
        expect(items).to_have_count(7)
        expect(items.nth(6)).to_contain_text("cancel requested by boss")
        handle.complete({"locations": 4})  # done before it reached a step that stops it
        expect(items).to_have_count(8)
        expect(items.nth(7).locator(".badge")).to_have_text("completed with errors")
    finally:
        server.stop()


def test_the_timeline_from_a_version_on_is_what_a_page_asks_for(api):
    handle = tracker.create_task("daily_sales", total=2)
    handle.error("L01: late")
    handle.progress(2, "L02")
    whole = api.get(f"/task-status/{handle.task_id}/events").json()
    after = api.get(f"/task-status/{handle.task_id}/events?after_version={whole[0]['version']}")
    assert after.status_code == 200
    assert after.json() == whole[1:]
    assert api.get(f"/task-status/{handle.task_id}/events?after_version=999").json() == []


@pytest.mark.parametrize("raw", ["-1", "x", "1.5", "１", "99999999"])
def test_a_bad_after_version_is_400_naming_it(api, raw):
    handle = tracker.create_task("daily_sales")
    response = api.get(f"/task-status/{handle.task_id}/events", {"after_version": raw})
    assert response.status_code == 400
    assert response.json()["parameter"] == "after_version"


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("boss", password="pw-boss", is_staff=True)
