"""``/schedule`` read in a real Chromium as a person reads it, and checked with axe-core.

Every time is a local time or an age in words (no Unix number), every status a
word, the history header says how many runs; and axe-core (WCAG 2.1 A and AA)
finds nothing serious or critical: the history chart's links used to sit inside
an ``role="img"`` (nested-interactive).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import redis
from axe_playwright_python.sync_playwright import Axe
from django.conf import settings
from django.core.cache import cache
from playwright.sync_api import expect

from operations.overview import HISTORY_RUNS
from tests.support import browser as chromium
from tests.support.browser import log_in, watch
from tests.support.celery_processes import celery_process, env_for
from tests.support.servers import Daphne
from tests.test_operations_overview import finished_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]
browser, context = chromium.browser, chromium.context

SERIOUS = {"serious", "critical"}


@pytest.fixture(autouse=True)
def fresh_runners():
    cache.clear()
    yield
    cache.clear()


def test_the_schedule_page_reads_in_words_and_passes_axe(context, tmp_path):
    from django.contrib.auth import get_user_model

    for seconds, status in ((3, "completed"), (4, "failed"), (6, "completed_with_errors")):
        finished_run("daily_sales", status, seconds)
    finished_run("invoice_sync", "completed_with_errors", 2)
    staff = get_user_model().objects.create_user("boss", password="pw", is_staff=True)
    queue = f"test-schedule-page-{uuid.uuid4().hex[:8]}"
    # invoice_sync due 15 minutes ago, watched since before that, never run: late.
    ago = datetime.fromtimestamp(time.time() - 900, ZoneInfo(settings.TIME_ZONE))
    env = env_for(queue, INVOICE_SYNC_SCHEDULE=f"{ago.minute} {ago.hour} * * *", DEBUG="0")
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.set(f"{queue}-beat:watchdog:since", time.time() - 3600)
    server = Daphne(env).start()
    try:
        with celery_process("worker", env, tmp_path, "ready."):
            log_in(context, server.http, staff)
            watched = watch(context.new_page())
            page = watched.page
            page.goto(f"{server.http}/schedule")
            expect(page.locator("tr[data-worker]")).to_have_count(1)
            text = page.locator("main").inner_text()

            assert not re.search(r"\b1\d{9}\b", text), "a raw Unix time on the page"
            worker_since = page.locator("tr[data-worker] time").inner_text()
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} \(\d+ s ago\)", worker_since)
            next_runs = page.locator("tr[data-operation] td:nth-child(3) time").all_inner_texts()
            assert next_runs and all(
                re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", value) for value in next_runs
            ), next_runs
            assert "completed with errors" in text and "completedwitherrors" not in text
            assert f"Last {HISTORY_RUNS} runs" in text and "Last  runs" not in text
            assert "late: due " in page.locator('tr[data-operation="invoice_sync"]').inner_text()
            assert "beat is not running (never seen)" in text
            expect(page.get_by_role("alert")).to_contain_text(
                "The scheduled run of invoice_sync due at "
            )
            bars = page.locator('tr[data-operation="daily_sales"] .history-chart a')
            expect(bars).to_have_count(3)
            assert re.fullmatch(
                r"completed with errors, 6\.0 s, \d{4}-\d{2}-\d{2} \d{2}:\d{2}",
                bars.last.get_attribute("aria-label") or "",
            )

            results = Axe().run(
                page,
                options={
                    "runOnly": {
                        "type": "tag",
                        "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"],
                    }
                },
            )
            serious = [
                (v["id"], len(v["nodes"]))
                for v in results.response["violations"]
                if v.get("impact") in SERIOUS
            ]
            assert serious == [], results.generate_report()
            assert watched.errors == []
    finally:
        server.stop()
        for key in client.scan_iter(f"{queue}-beat:*"):
            client.delete(key)
