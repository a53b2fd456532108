""" "Notify me when it ends" in Chromium: the open task page tells the browser once.

The page's own Notification calls are recorded by wrapping the browser's
constructor (the real one still runs): the browser is a third party we observe.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from playwright.sync_api import expect

from tasks import tracker
from tests.support import browser as chromium
from tests.support.browser import log_in, watch
from tests.support.servers import Daphne, service_env

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
browser, context = chromium.browser, chromium.context

RECORD_NOTIFICATIONS = """
(() => {
  const Original = window.Notification;
  window.__notifications = [];
  class Recorded extends Original {
    constructor(title, options) {
      super(title, options);
      const { body, tag } = options || {};
      window.__notifications.push({ title, body, tag });
    }
  }
  Object.defineProperty(Recorded, "permission", { get: () => Original.permission });
  Recorded.requestPermission = (...args) => Original.requestPermission(...args);
  window.Notification = Recorded;
})();
"""


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    daphne = Daphne(
        service_env(
            DEBUG="0",
            CELERY_QUEUE=settings.CELERY_TASK_DEFAULT_QUEUE,
            ALERT_QUEUE=settings.ALERT_QUEUE,
        )
    ).start()
    try:
        yield daphne
    finally:
        daphne.stop()


def open_task_page(context, server, user, task_id: str):
    context.grant_permissions(["notifications"], origin=server.http)
    context.add_init_script(RECORD_NOTIFICATIONS)
    log_in(context, server.http, user)
    watched = watch(context.new_page())
    watched.page.goto(f"{server.http}/tasks/{task_id}")
    return watched.page


def test_notify_me_tells_the_open_page_once_when_the_task_ends(context, server, user):
    user.email = "reader@example.com"
    user.save()
    handle = tracker.create_task("daily_sales", total=2, launched_by=user.username)
    page = open_task_page(context, server, user, handle.task_id)
    page.get_by_role("button", name="Notify me when it ends").click()
    expect(page.locator('[data-field="notify"]')).to_contain_text(
        "You will get a mail at reader@example.com when it ends."
    )
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    handle.progress(1, "one of two")
    expect(page.locator('[data-field="badge"]')).to_have_text("processing")
    assert page.evaluate("window.__notifications") == []  # progress is not an end
    handle.complete({"locations": 2})
    expect(page.locator('[data-field="badge"]')).to_have_text("completed")
    page.wait_for_function("window.__notifications.length > 0")
    notes = page.evaluate("window.__notifications")
    assert notes == [
        {
            "title": "Daily sales processing: completed",
            "body": f"Task {handle.task_id[:8]} has ended.",
            "tag": handle.task_id,
        }
    ]


def test_no_browser_notification_without_asking(context, server, user):
    handle = tracker.create_task("daily_sales", total=1)
    page = open_task_page(context, server, user, handle.task_id)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    handle.complete({})
    expect(page.locator('[data-field="badge"]')).to_have_text("completed")
    # The page calls for a notification in the same handler that draws the badge.
    assert page.evaluate("window.__notifications") == []
