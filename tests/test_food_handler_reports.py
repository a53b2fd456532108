"""A date other than today is a report, not a change: a future ``as_of`` is refused (at
launch and by the job), a past one writes a packet of its own, recorded as of its date,
and leaves every stored status, certificate and current packet as it was."""

from __future__ import annotations

import io
import json
from datetime import date, timedelta

import pytest
from django.contrib.auth.models import Group
from pypdf import PdfReader

from operations import documents
from operations.jobs import JobFailed, food_handlers
from operations.models import (
    FoodHandlerArchivedPacket,
    FoodHandlerCertificate,
    FoodHandlerPacket,
)
from tasks import tracker
from tasks.selectors import get_task
from tests import test_documents as links
from tests import test_operations_food_handlers as sample
from tests.support.food_handlers import (
    AS_OF,
    BAD,
    STATUSES,
    expected_counts,
    expected_statuses,
    stored_files,
    stored_state,
    today,
)
from tests.support.jobs import run_job

pytestmark = pytest.mark.django_db(transaction=True)
errors = sample.errors  # every message the job reports (fixture)
reader = links.reader  # a user with the food handler reader role (fixture)
reader_client = links.reader_client  # logged in as that reader (fixture)


def launch(client, params: dict):
    return client.post(
        "/task-status",
        {"operation": "update_food_handler_pdfs", "params": params},
        content_type="application/json",
    )


def test_a_future_as_of_is_refused_at_launch_with_a_field_error(client, runner):
    runner.groups.add(Group.objects.get_or_create(name=links.READER_ROLE)[0])
    client.force_login(runner)
    tomorrow = (today() + timedelta(days=1)).isoformat()
    for as_of in (tomorrow, "9999-12-31"):
        response = launch(client, {"as_of": as_of})
        assert response.status_code == 400, response.content
        body = response.json()
        assert body["detail"] and body["request_id"]
        assert "is in the future" in json.dumps(body["errors"]["as_of"])


def test_the_job_refuses_a_future_as_of_too(sample_roster):
    """Whatever called it: the job itself does not judge a card on a day not yet come."""
    handle = tracker.create_task("update_food_handler_pdfs", params={}, launched_by="test")
    tomorrow = today() + timedelta(days=1)
    with pytest.raises(JobFailed, match="is in the future"):
        with tracker.open_task(handle.task_id) as running:
            food_handlers.run(running, {"as_of": tomorrow, "locations": []})
    task = get_task(handle.task_id)
    assert task.status == "failed" and f"as_of {tomorrow.isoformat()} is in the future" in (
        task.error
    )
    assert not FoodHandlerCertificate.objects.exists()
    assert not FoodHandlerArchivedPacket.objects.exists()
    assert not sample_roster.exists()  # not a document stored


def test_a_report_on_the_sample_gives_the_documented_figures_and_stores_no_record(
    sample_roster, errors
):
    task = run_job("update_food_handler_pdfs", {"as_of": AS_OF.isoformat()})

    assert task.status == "completed_with_errors", task.error
    assert task.result["report"] is True and task.result["as_of"] == "2025-06-15"
    assert task.result["totals"] == {
        "valid": 717,
        "expiring": 15,
        "expired": 15,
        "missing": 8,
        "overdue": 20,
    }
    assert task.result["locations"] == expected_counts(expected_statuses(AS_OF))
    assert set(task.result["failed"]) == set(BAD) and len(errors) == len(BAD)
    assert "report as of 2025-06-15" in task.progress_message
    # Nothing of the record: no row, no current packet, no certificate stored.
    assert not FoodHandlerCertificate.objects.exists()
    assert not FoodHandlerPacket.objects.exists()
    assert not (sample_roster / "food-handler" / "certificates").exists()
    # A packet per location, recorded as a report of its date and linked from the result.
    reports = {p.location_id: p for p in FoodHandlerArchivedPacket.objects.all()}
    assert set(reports) == set(task.result["locations"])
    for location_id, packet in reports.items():
        assert packet.kind == "report" and packet.as_of == AS_OF
        assert packet.counts == task.result["locations"][location_id]
        link = task.result["packets"][location_id]
        assert link["filename"] == f"food-handler-packet-{location_id}-as-of-2025-06-15.pdf"
        assert documents.unsign(link["url"].removeprefix("/documents/")).name == packet.document
        cover = PdfReader(io.BytesIO(documents.read(packet.document))).pages[0].extract_text()
        assert "REPORT as of 2025-06-15" in cover and f"Location {location_id}" in cover
    # get_food_handler_links has nothing to show: a report is not a record.
    assert run_job("get_food_handler_links").error.startswith("no food handler records yet")


def test_a_past_as_of_changes_no_status_and_no_current_packet(sample_roster, reader_client):
    current = run_job("update_food_handler_pdfs", {"locations": ["L01", "L08"]})
    assert current.result["report"] is False and not FoodHandlerArchivedPacket.objects.exists()
    before = stored_state(), stored_files(sample_roster / "food-handler" / "certificates")
    packets = dict(FoodHandlerPacket.objects.values_list("location_id", "document"))
    etags = dict(FoodHandlerCertificate.objects.values_list("employee_id", "source_etag"))
    links_before = run_job("get_food_handler_links").result

    far_back = "2020-01-01"  # every card then: before it was issued, so statuses all differ
    report = run_job("update_food_handler_pdfs", {"as_of": far_back, "locations": ["L01"]})

    assert report.status == "completed_with_errors" and report.result["report"] is True
    statuses = expected_statuses(date.fromisoformat(far_back))
    l01 = {k: v for k, v in statuses.items() if k.startswith("L01-")}
    assert report.result["locations"]["L01"] == {
        s: sum(1 for v in l01.values() if v == s) for s in STATUSES
    }
    assert report.result["locations"]["L01"] != current.result["locations"]["L01"]
    assert (stored_state(), stored_files(sample_roster / "food-handler" / "certificates")) == (
        before
    )
    assert dict(FoodHandlerPacket.objects.values_list("location_id", "document")) == packets
    assert dict(FoodHandlerCertificate.objects.values_list("employee_id", "source_etag")) == etags
    (archived,) = FoodHandlerArchivedPacket.objects.all()
    assert (archived.kind, archived.location_id, archived.as_of.isoformat()) == (
        "report",
        "L01",
        far_back,
    )
    assert archived.document not in packets.values()
    # The links still show today's statuses and today's packets.
    links_after = run_job("get_food_handler_links").result
    for before_loc, after_loc in zip(
        links_before["locations"], links_after["locations"], strict=True
    ):
        assert after_loc["employees"] == [
            {**line, "url": after_line["url"]}
            for line, after_line in zip(
                before_loc["employees"], after_loc["employees"], strict=True
            )
        ]
        packet = documents.unsign(after_loc["packet"]["url"].removeprefix("/documents/"))
        assert packet.name == packets[after_loc["location_id"]]
    # The report's own packet downloads, under its dated name.
    link = report.result["packets"]["L01"]
    response = reader_client.get(link["url"])
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{link["filename"]}"'
    assert response.content == documents.read(archived.document)


def test_today_as_given_is_the_record(sample_roster):
    task = run_job("update_food_handler_pdfs", {"as_of": today().isoformat(), "locations": ["L02"]})
    assert task.result["report"] is False and "packets" not in task.result
    assert FoodHandlerPacket.objects.get(location_id="L02").as_of == today()
    assert set(FoodHandlerCertificate.objects.values_list("status", flat=True)) <= set(STATUSES)
    assert FoodHandlerCertificate.objects.filter(location_id="L02").count() == sum(
        task.result["locations"]["L02"].values()
    )
