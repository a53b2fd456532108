"""get_food_handler_links' result in a real Chromium: a table of statuses and download links
on the task's page (served by a real daphne, as production runs it), and a link that
downloads the PDF."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import expect

from operations.models import FoodHandlerCertificate, FoodHandlerPacket
from tests.support import browser as chromium
from tests.support.browser import log_in, watch
from tests.support.food_handlers import ROSTER, expected_statuses, food_handlers_by_id
from tests.support.jobs import run_job
from tests.support.servers import Daphne, service_env

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
browser, context = chromium.browser, chromium.context  # the fixtures, one browser per module


@pytest.fixture(scope="module")
def documents_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("documents")


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, documents_dir):
    env = service_env(
        DEBUG="0",
        CELERY_QUEUE=settings.CELERY_TASK_DEFAULT_QUEUE,
        DOCUMENT_STORAGE_BACKEND="django.core.files.storage.FileSystemStorage",
        DOCUMENT_STORAGE_OPTIONS=json.dumps({"location": str(documents_dir)}),
    )
    daphne = Daphne(env).start()
    try:
        yield daphne
    finally:
        daphne.stop()


@pytest.fixture
def links_task(settings, documents_dir):
    """update_food_handler_pdfs then get_food_handler_links, run here into the server's
    document storage."""
    settings.ROSTER_SOURCE_URL = f"file://{ROSTER}"
    settings.STORAGES = {
        **settings.STORAGES,
        "documents": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(documents_dir)},
        },
    }
    checked = run_job("update_food_handler_pdfs", {"locations": ["L01", "L08"]})
    assert checked.status == "completed_with_errors", checked.error
    task = run_job("get_food_handler_links")
    assert task.status == "completed", task.error
    return task


def test_the_links_show_as_a_table_and_download_pdfs(
    context, server, links_task, django_user_model, documents_dir
):
    staff = django_user_model.objects.create_user("boss", password="pw", is_staff=True)
    log_in(context, server.http, staff)
    watched = watch(context.new_page())
    page = watched.page
    page.goto(f"{server.http}/tasks/{links_task.task_id}")
    expect(page.locator("[data-field=badge]")).to_have_text("completed")
    expect(page.locator("[data-field=result]")).to_be_hidden()  # a table, not JSON
    links = page.locator("[data-field=links]")
    expect(links).to_be_visible()
    expect(links.locator("section.links-location")).to_have_count(2)
    expect(links.locator(".links-expiry")).to_contain_text("expire")

    handlers = food_handlers_by_id()
    rows = {r.employee_id: r for r in FoodHandlerCertificate.objects.all()}
    l01 = links.locator('section[data-location="L01"]')
    expect(l01.locator("tbody tr")).to_have_count(
        sum(1 for e in handlers.values() if e["location_id"] == "L01")
    )
    for emp_id in ("L01-E001", "L01-E011", "L01-E024", "L01-E032", "L01-E043", "L01-E071"):
        line = l01.locator(f'tr[data-employee-id="{emp_id}"]')
        expect(line.locator("td").first).to_contain_text(handlers[emp_id]["name"])
        expect(line.locator(".badge")).to_have_text(rows[emp_id].status)
        certificate = line.get_by_role("link")
        if rows[emp_id].document:
            expect(certificate).to_have_attribute("href", re.compile(r"^/documents/[\w:.-]+$"))
        else:
            expect(certificate).to_have_count(0)
            expect(line).to_contain_text("none on file")
    # The sample's statuses as of today (the rule, applied by the test), as the page shows them.
    picked = ("L01-E011", "L01-E024", "L01-E032", "L01-E043", "L01-E071")
    shown = {
        emp_id: l01.locator(f'tr[data-employee-id="{emp_id}"] .badge').text_content()
        for emp_id in picked
    }
    expected = expected_statuses()
    assert shown == {emp_id: expected[emp_id] for emp_id in picked}
    assert shown["L01-E071"] == "overdue"  # its certificate is missing at the source

    # A click downloads the certificate: the stored bytes.
    first = l01.locator('tr[data-employee-id="L01-E001"]').get_by_role("link")
    with page.expect_download() as info:
        first.click()
    download = info.value
    assert download.suggested_filename == "food-handler-L01-E001.pdf"
    content = Path(download.path()).read_bytes()
    assert content.startswith(b"%PDF-")
    assert content == (documents_dir / rows["L01-E001"].document).read_bytes()

    # The packet's link, fetched from the page with its session.
    packet = links.locator('section[data-location="L08"] .links-packet a')
    expect(packet).to_contain_text("food-handler-packet-L08.pdf")
    href = packet.get_attribute("href")
    fetched = page.evaluate(
        """async (href) => {
        const response = await fetch(href, {credentials: "same-origin"});
        const bytes = new Uint8Array(await response.arrayBuffer());
        return {status: response.status, type: response.headers.get("content-type"),
                head: String.fromCharCode(...bytes.slice(0, 5)), size: bytes.length};
    }""",
        href,
    )
    stored = documents_dir / FoodHandlerPacket.objects.get(location_id="L08").document
    assert fetched == {
        "status": 200,
        "type": "application/pdf",
        "head": "%PDF-",
        "size": stored.stat().st_size,
    }
    assert not watched.errors
