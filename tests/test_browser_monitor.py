"""The staff pages in a real Chromium, against a real daphne on PostgreSQL and Redis.

The server runs as production does (``DEBUG=0``, static files from WhiteNoise);
jobs report from their own processes through the tracker.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import Page, expect

from tests.support import browser as chromium
from tests.support.browser import DESKTOP, PHONE, log_in, watch
from tests.support.servers import ROOT, Daphne, report, service_env

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
browser, context = chromium.browser, chromium.context  # the fixtures, one browser per module

SCREENSHOTS = os.environ.get("MONITOR_SCREENSHOTS") == "1"


def server_env() -> dict[str, str]:
    # Launches from the page go to this run's unconsumed queue, never a real worker's.
    return service_env(DEBUG="0", CELERY_QUEUE=settings.CELERY_TASK_DEFAULT_QUEUE)


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    daphne = Daphne(server_env()).start()
    try:
        yield daphne
    finally:
        daphne.stop()


@pytest.fixture
def jobs():
    with ThreadPoolExecutor(2) as pool:
        yield pool


def row(page: Page, task_id: str):
    return page.locator(f'tr[data-task-id="{task_id}"]')


def open_monitor(context, server, user, query: str = ""):
    log_in(context, server.http, user)
    watched = watch(context.new_page())
    watched.page.goto(f"{server.http}/{query}")
    expect(watched.page.locator("#connection")).to_have_attribute("data-state", "live")
    return watched


def make_task(operation: str, *, total: int | None = None, steps=(), age: float = 0.0):
    """A task written through the tracker (its handle), optionally aged for a realistic table."""
    from tasks import tracker
    from tasks.models import TaskStatus

    handle = tracker.create_task(operation, total=total)
    for kind, *args in steps:
        getattr(handle, kind)(*args)
    if age:
        task = TaskStatus.objects.get(pk=handle.task_id)
        span = task.updated_at - task.created_at
        created = time.time() - age
        updated = min(time.time(), created + max(span, age * 0.35))
        TaskStatus.objects.filter(pk=handle.task_id).update(
            created_at=created, updated_at=updated, expires_at=time.time() + 3600
        )
    return handle


def test_an_anonymous_visitor_signs_in_and_the_page_is_served_without_debug(context, server, user):
    page = context.new_page()
    page.goto(f"{server.http}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("User name").fill("reader")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("do not match")
    page.get_by_label("Password").fill("pw-reader")
    page.get_by_label("Password").press("Enter")
    expect(page).to_have_url(f"{server.http}/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    # WhiteNoise served the stylesheet and the modules with DEBUG off.
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(244, 246, 249)"
    assert page.evaluate("typeof window.taskMonitor.client") == "object"


def test_a_reported_task_appears_at_once_advances_and_completes(context, server, user, jobs):
    watched = open_monitor(context, server, user)
    page = watched.page
    # When each row appeared, by the page's clock (the same machine's as the job's).
    page.evaluate("""() => {
        window.__appeared = {};
        new MutationObserver((changes) => {
            for (const change of changes) for (const node of change.addedNodes) {
                if (node.dataset && node.dataset.taskId) {
                    window.__appeared[node.dataset.taskId] ??= Date.now() / 1000;
                }
            }
        }).observe(document.querySelector("#tasks tbody"), {childList: true});
    }""")
    gate = Path(tempfile.mkdtemp()) / "go"
    job = jobs.submit(
        report,
        [
            ["start", "daily_sales", 3],
            ["progress", 1, "Location 1 of 3"],
            ["wait_for_file", str(gate)],
            ["progress", 2, "Location 2 of 3"],
            ["sleep", 0.15],
            ["complete", {"locations": 3}],
        ],
    )
    first = page.locator("#tasks tbody tr").first
    expect(first).to_be_visible(timeout=10000)
    task_id = first.get_attribute("data-task-id")
    from tasks.models import TaskStatus

    created = TaskStatus.objects.get(pk=task_id).created_at
    appeared = page.evaluate("(id) => window.__appeared[id]", task_id)
    assert appeared - created < 1.0, f"the task took {appeared - created:.2f} s to show"
    line = row(page, task_id)
    expect(line.locator(".progress-count")).to_have_text("1/3")
    expect(line.locator(".progress-msg")).to_have_text("Location 1 of 3")
    expect(line.locator(".badge")).to_have_text("processing")
    expect(line.locator(".op-name")).to_have_text("daily_sales")
    expect(line.get_by_role("link")).to_have_attribute("href", f"/tasks/{task_id}")
    gate.touch()
    expect(line.locator(".progress-count")).to_have_text("2/3")
    expect(line.locator(".badge")).to_have_text("completed")
    expect(line.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "2")
    assert job.result()["status"] == "completed"
    expect(page.locator("#announcer")).to_contain_text("completed")
    # The detail page shows the result as pretty JSON, live from the same client.
    line.get_by_role("link").click()
    expect(page.locator("[data-field=result]")).to_have_text(json.dumps({"locations": 3}, indent=2))
    expect(page.locator("[data-field=badge]")).to_have_text("completed")
    assert not watched.errors


def test_the_page_rides_out_a_server_restart_without_a_reload(context, server, user, jobs):
    watched = open_monitor(context, server, user)
    page = watched.page
    page.evaluate("window.__sameDocument = true")
    gate = Path(tempfile.mkdtemp()) / "go"
    job = jobs.submit(
        report,
        [
            ["start", "invoice_sync", 2],
            ["progress", 1, "page 1"],
            ["wait_for_file", str(gate)],
            ["progress", 2, "page 2"],
            ["complete", {"invoices": 7}],
        ],
    )
    first = page.locator("#tasks tbody tr").first
    expect(first.locator(".progress-count")).to_have_text("1/2", timeout=10000)
    indicator = page.locator("#connection")
    try:
        server.stop()  # SIGTERM: clients are closed with 4001
        expect(indicator).to_have_attribute("data-state", "reconnecting")
        expect(indicator.locator(".conn-detail")).to_have_text(re.compile(r"in \d+ s|now"))
        gate.touch()
        assert job.result()["status"] == "completed"  # finished while nobody listened
    finally:
        server.start()  # the same port, for this test and the rest of the module
    expect(indicator).to_have_attribute("data-state", "live", timeout=15000)
    expect(first.locator(".badge")).to_have_text("completed")
    expect(first.locator(".progress-count")).to_have_text("2/2")
    assert page.evaluate("window.__sameDocument") is True
    assert not watched.errors


def test_filters_apply_and_live_in_the_url(context, server, user):
    sales = make_task("daily_sales", total=2, steps=[("progress", 1, "a")])
    done = make_task("daily_sales", total=1, steps=[("progress", 1, "b"), ("complete", {})])
    done = done.task_id
    invoices = make_task("invoice_sync", total=1, steps=[("fail", "source down")]).task_id
    watched = open_monitor(context, server, user, "?operation=daily_sales")
    page = watched.page
    expect(page.locator("#tasks tbody tr")).to_have_count(2)
    expect(page.locator("#filter-operation")).to_have_value("daily_sales")
    page.locator("label.chip", has_text="completed").first.click()
    expect(page).to_have_url(re.compile(r"\?operation=daily_sales&status=completed$"))
    expect(page.locator("#tasks tbody tr")).to_have_count(1)
    expect(row(page, done)).to_be_visible()
    page.locator("#filter-operation").select_option("")
    expect(page).to_have_url(re.compile(r"/\?status=completed$"))
    page.get_by_role("button", name="Clear filters").click()
    expect(page).to_have_url(f"{server.http}/")
    expect(page.locator("#tasks tbody tr")).to_have_count(3)
    # A live change that leaves the filter takes the row away; one that enters adds it.
    page.goto(f"{server.http}/?status=processing")
    expect(page.locator("#tasks tbody tr")).to_have_count(1)
    expect(page.locator("label.chip", has_text="processing").locator("input")).to_be_checked()
    sales.complete({"rows": 1})
    expect(row(page, sales.task_id)).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    assert row(page, invoices).count() == 0
    assert not watched.errors


def test_a_reader_sees_no_run_button_and_is_refused_when_forcing_it(context, server, user):
    make_task("daily_sales", total=2, steps=[("progress", 1, "running")])
    page = open_monitor(context, server, user).page
    expect(page.locator("#tasks tbody tr")).to_have_count(1)
    expect(page.get_by_role("button", name=re.compile("^Run|Cancel"))).to_have_count(0)
    status = page.evaluate("""async () => {
        const csrf = JSON.parse(document.getElementById("page-config").textContent).csrfToken;
        const response = await fetch("/task-status", {
            method: "POST", credentials: "same-origin",
            headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
            body: JSON.stringify({operation: "invoice_sync", params: {}}),
        });
        return response.status;
    }""")
    assert status == 403


def test_a_runner_launches_from_the_form_and_cancels(context, server, runner):
    page = open_monitor(context, server, runner).page
    page.get_by_role("button", name="Daily sales processing").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Business date").fill("2999-01-01")
    dialog.get_by_role("button", name="Run").click()
    expect(dialog.locator("[data-error-for=business_date]")).to_contain_text("future")
    dialog.get_by_label("Business date").fill("2025-06-10")
    dialog.get_by_role("button", name="Run").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#notice")).to_contain_text("Started Daily sales processing")
    line = page.locator("#tasks tbody tr").first
    expect(line.locator(".badge")).to_have_text("started")
    task_id = line.get_attribute("data-task-id")
    from tasks.models import TaskStatus

    assert TaskStatus.objects.get(pk=task_id).params["business_date"] == "2025-06-10"
    # No worker runs in this server, so the task is still queued: it ends at once.
    line.get_by_role("button", name=re.compile("^Cancel")).click()
    expect(page.locator("#notice")).to_contain_text("cancelled before it started")
    expect(line.locator(".badge")).to_have_text("failed")
    expect(line.get_by_role("button", name=re.compile("^Cancel"))).to_have_count(0)
    row = TaskStatus.objects.get(pk=task_id)
    assert (row.status, row.error) == ("failed", "cancelled by runner before it started")

    # A task a worker holds stops at its next step: the button says so meanwhile.
    from operations.runner import claim

    running = make_task("daily_sales", total=4, steps=[("progress", 1, "location 1")])
    claim(running.task_id, "daily_sales", "worker:1")
    held = page.locator(f'tr[data-task-id="{running.task_id}"]')
    expect(held.locator(".badge")).to_have_text("processing")
    held.get_by_role("button", name=re.compile("^Cancel")).click()
    expect(held.get_by_role("button", name=re.compile("^Cancel"))).to_have_text("Cancelling…")
    expect(page.locator("#notice")).to_contain_text("it stops at its next step")
    assert TaskStatus.objects.get(pk=running.task_id).cancel_requested_by == "runner"


HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


def test_hostile_content_stays_text_and_the_layout_holds(context, server, user):
    long_word = "A" * 4000
    task_id = make_task(
        "invoice_sync",
        total=3,
        steps=[
            ("progress", 1, HOSTILE + long_word),
            ("error", f"<b>bold</b>{HOSTILE}{long_word}"),
            ("complete", {"html": HOSTILE, "long": long_word, "nested": [{"x": HOSTILE}]}),
        ],
    ).task_id
    watched = open_monitor(context, server, user)
    page = watched.page
    line = row(page, task_id)
    expect(line.locator(".progress-msg")).to_contain_text("<img src=x onerror=")
    expect(line.locator(".progress-error")).to_contain_text("<b>bold</b>")
    assert line.locator("img, script, b").count() == 0

    def fits(viewport: dict) -> None:
        page.set_viewport_size(viewport)
        width = page.evaluate("document.documentElement.scrollWidth")
        table = page.evaluate("""
            (document.getElementById("tasks") || document.querySelector("main"))
                .getBoundingClientRect().right""")
        assert width <= viewport["width"] and table <= viewport["width"], (width, table)

    fits(DESKTOP)
    fits(PHONE)
    # A malformed message from the server is logged and ignored, and the stream goes on.
    import redis

    channel = settings.TASK_UPDATES_CHANNEL
    bogus = str(uuid.uuid4())
    connection = redis.Redis.from_url(settings.REDIS_URL)
    connection.publish(channel, f"{bogus} daily_sales 1 started\n{{not json")
    connection.publish(
        channel,
        f"{bogus} daily_sales 2 started\n"
        + json.dumps({"type": "task_status", "payload": {"task_id": bogus, "status": "<script>"}}),
    )
    later = make_task("daily_sales", total=1).task_id
    expect(row(page, later)).to_be_visible()
    assert watched.warnings("not JSON") and watched.warnings("malformed task document")
    assert row(page, bogus).count() == 0
    assert page.evaluate("window.__pwned") is None

    page.goto(f"{server.http}/tasks/{task_id}")
    expect(page.locator("[data-field=result]")).to_contain_text('"html": "<img src=x')
    expect(page.locator("[data-field=error]")).to_contain_text("<b>bold</b>")
    fits(PHONE)
    fits(DESKTOP)
    assert page.evaluate("window.__pwned") is None
    assert not watched.errors


def test_the_monitor_reads_well_on_a_phone(context, server, runner):
    """Realistic data at desktop and phone widths; MONITOR_SCREENSHOTS=1 saves them to docs/."""
    from django.contrib.auth.models import Group

    for role in set(settings.PERSONAL_DATA_READER_ROLES.values()):  # tips and food handlers
        runner.groups.add(Group.objects.get_or_create(name=role)[0])
    finished = make_task(
        "daily_sales",
        total=12,
        steps=[
            *(("progress", i, f"Location {i} of 12") for i in range(1, 13)),
            (
                "complete",
                {
                    "locations": 12,
                    "net_sales": 184230.55,
                    "by_location": {"001": 15230.1, "002": 17788.0, "003": 12961.4},
                },
            ),
        ],
        age=6 * 3600,
    )
    make_task(
        "invoice_sync",
        total=40,
        steps=[("progress", 40, "Exported 40 invoices"), ("complete", {"invoices": 40})],
        age=3 * 3600,
    )
    make_task(
        "get_mpvs",
        total=8,
        steps=[
            ("progress", 3, "Store 3 of 8"),
            ("fail", "timeclock export unavailable (HTTP 503)"),
        ],
        age=2 * 3600,
    )
    make_task(
        "transform_tips",
        total=6,
        steps=[
            ("progress", 6, "Store 6 of 6"),
            ("error", "store 114: no tip pool configured"),
            ("complete", {"stores": 5}),
        ],
        age=50 * 60,
    )
    make_task(
        "update_food_handler_pdfs",
        total=30,
        steps=[("progress", 21, "Certificate 21 of 30")],
        age=7 * 60,
    )
    make_task(
        "daily_sales",
        total=12,
        steps=[
            ("progress", 4, "Location 4 of 12"),
            ("error", "location 007: sales file missing"),
            ("progress", 5, "Location 5 of 12"),
        ],
        age=95,
    )
    make_task("email_tips", total=None, age=4)
    page = open_monitor(context, server, runner).page
    expect(page.locator("#tasks tbody tr")).to_have_count(7)
    page.evaluate("document.fonts.ready")
    if SCREENSHOTS:
        page.screenshot(path=str(ROOT / "docs" / "monitor.png"))
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    if SCREENSHOTS:
        page.screenshot(path=str(ROOT / "docs" / "monitor-phone.png"), full_page=True)
    # Every control is reachable from the keyboard, in order: skip link first.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.set_viewport_size(DESKTOP)
    page.goto(f"{server.http}/tasks/{finished.task_id}")
    expect(page.locator("[data-field=badge]")).to_have_text("completed")
    expect(page.get_by_role("button", name="Cancel task")).to_be_hidden()
    if SCREENSHOTS:
        page.screenshot(path=str(ROOT / "docs" / "monitor-detail.png"))


def test_a_page_whose_session_ended_offers_to_sign_in_again(context, server, user):
    watched = open_monitor(context, server, user)
    page = watched.page
    context.clear_cookies()  # the session is gone, as after a sign-out elsewhere
    page.evaluate("window.taskMonitor.client.ws.close()")
    again = page.locator("#connection .conn-detail a")
    expect(again).to_have_text("signed out: sign in again", timeout=10000)
    again.click()
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))


def test_tips_run_from_the_monitor_on_a_worker_for_a_reader_only(
    context, server, runner, django_user_model, tmp_path
):
    """A payroll runner launches transform_tips from the Run form and watches it finish."""
    from django.contrib.auth.models import Group

    from tasks.models import TaskStatus
    from tests.support.celery_processes import celery_process, env_for

    plain_runner = django_user_model.objects.create_user("plainrunner", password="pw-plainrunner")
    plain_runner.groups.add(Group.objects.get_or_create(name=settings.TASK_RUNNER_ROLE)[0])
    page = open_monitor(context, server, plain_runner).page
    expect(page.get_by_role("button", name="Daily sales processing")).to_be_visible()
    expect(page.get_by_role("button", name="Tips transformation")).to_have_count(0)
    page.close()

    runner.groups.add(Group.objects.get_or_create(name="TaskStatus.Tips.Read")[0])
    env = env_for(
        settings.CELERY_TASK_DEFAULT_QUEUE,
        ACCOUNTING_TARGET_URL=f"file://{tmp_path / 'accounting'}",
    )
    with celery_process("worker", env, tmp_path, "ready."):
        page = open_monitor(context, server, runner).page
        page.get_by_role("button", name="Tips transformation").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Period start").fill("2025-06-02")
        dialog.get_by_label("Locations").fill("L01, L09")
        dialog.get_by_role("button", name="Run").click()
        expect(dialog).to_be_hidden()
        line = page.locator("#tasks tbody tr").first
        expect(line.locator(".badge")).to_have_text("completed with errors", timeout=60_000)
        expect(line.locator(".progress-error")).to_contain_text("L09")
    task = TaskStatus.objects.get(pk=line.get_attribute("data-task-id"))
    assert task.operation == "transform_tips"
    assert task.params["period_end"] == "2025-06-08"
    assert (tmp_path / "accounting" / "payroll" / "tips-2025-06-02-2025-06-08.csv").exists()
