"""Run again: a finished run's page offers a new launch of the same operation and
parameters, shown and editable in the Run form first, linking back to the run it repeats."""

from __future__ import annotations

import pytest
from django.conf import settings
from playwright.sync_api import expect

from tasks import tracker
from tasks.models import TaskStatus
from tests.support import browser as chromium
from tests.support.browser import log_in, watch
from tests.support.servers import Daphne, service_env

pytestmark = pytest.mark.django_db(transaction=True)
browser, context = chromium.browser, chromium.context


def finished(operation: str, params: dict) -> str:
    handle = tracker.create_task(operation, params=params)
    handle.fail("source down")
    return handle.task_id


def launch(client, body):
    return client.post("/task-status", body, content_type="application/json")


def test_a_rerun_is_a_launch_that_names_the_run_it_repeats(client, runner):
    client.force_login(runner)
    original = finished("get_mpvs", {"business_date": "2025-06-10", "locations": ["L01"]})
    response = launch(
        client,
        {
            "operation": "get_mpvs",
            "rerun_of": original,
            "params": {"business_date": "2025-06-11", "locations": ["L01"]},
        },
    )
    assert response.status_code == 202, response.content
    new = TaskStatus.objects.get(pk=response.json()["task_id"])
    assert str(new.rerun_of) == original and new.params["business_date"] == "2025-06-11"
    page = client.get(f"/tasks/{new.task_id}").content.decode()
    assert f'href="/tasks/{original}"' in page


def test_a_rerun_of_another_operation_or_an_unseen_task_is_refused(client, runner):
    client.force_login(runner)
    original = finished("get_mpvs", {"business_date": "2025-06-10"})
    wrong = launch(client, {"operation": "daily_sales", "rerun_of": original, "params": {}})
    assert wrong.status_code == 400 and "rerun_of" in wrong.json()["errors"]
    tips = finished("transform_tips", {})
    hidden = launch(client, {"operation": "get_mpvs", "rerun_of": tips, "params": {}})
    assert hidden.status_code == 404  # a task the runner cannot see does not exist for them


@pytest.mark.browser
def test_run_again_opens_the_form_filled_with_the_run_s_parameters(context, runner):
    reader = runner.__class__.objects.create_user("reader-only", password="pw")
    original = finished("get_mpvs", {"business_date": "2025-06-10", "locations": ["L01", "L02"]})
    server = Daphne(service_env(DEBUG="0", CELERY_QUEUE=settings.CELERY_TASK_DEFAULT_QUEUE)).start()
    try:
        log_in(context, server.http, reader)
        page = watch(context.new_page()).page
        page.goto(f"{server.http}/tasks/{original}")
        expect(page.locator("[data-run-again]")).to_have_count(0)  # not a runner
        context.clear_cookies()
        log_in(context, server.http, runner)
        page.goto(f"{server.http}/tasks/{original}")
        page.get_by_role("link", name="Run again").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        expect(dialog.get_by_label("Business date")).to_have_value("2025-06-10")
        expect(dialog.get_by_label("Locations")).to_have_value("L01, L02")
        dialog.get_by_label("Locations").fill("L02")
        dialog.get_by_role("button", name="Run").click()
        expect(dialog).to_be_hidden()
        expect(page.locator("#notice")).to_contain_text("Started")
    finally:
        server.stop()
    new = TaskStatus.objects.exclude(pk=original).get(operation="get_mpvs")
    assert str(new.rerun_of) == original
    assert new.params == {"business_date": "2025-06-10", "locations": ["L02"]}
