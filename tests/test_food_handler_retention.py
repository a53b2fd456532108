"""Personal data leaves with the person: the certificate of someone no longer on the roster
is deleted after FOOD_HANDLER_RETENTION_DAYS unless a current record still names the
file, its link answers 410 from then on (file or not), and packets that are no longer
current (replaced, of a closed location, reports) go after the same period."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from operations import documents
from operations.models import (
    FoodHandlerArchivedPacket,
    FoodHandlerCertificate,
    FoodHandlerDeparture,
    FoodHandlerPacket,
)
from tests import test_documents as links
from tests import test_operations_food_handlers as sample
from tests.support.food_handlers import certificate, person, write_roster
from tests.support.jobs import run_job

pytestmark = pytest.mark.django_db(transaction=True)
own_roster = sample.own_roster  # a roster of our own in a temporary directory (fixture)
reader = links.reader  # a user with the food handler reader role (fixture)
reader_client = links.reader_client  # logged in as that reader (fixture)

ANA = person("L01-E001", "Ana Silva", hired="2020-01-01", card="C-1")
BO = person("L01-E002", "Bo Chen", hired="2020-01-01", card="C-2")
CY = person("L02-E001", "Cy Park", hired="2020-01-01", card="C-7")


def link_of(result: dict, employee_id: str) -> str:
    return next(
        line["url"]
        for location in result["locations"]
        for line in location["employees"]
        if line["employee_id"] == employee_id
    )


def packet_link(result: dict, location_id: str) -> str:
    return next(
        loc["packet"]["url"] for loc in result["locations"] if loc["location_id"] == location_id
    )


def age(days: int) -> None:
    """Let ``days`` pass for what departed or was archived (the rows' own timestamps)."""
    shift = timedelta(days=days)
    for departure in FoodHandlerDeparture.objects.all():
        departure.departed_at -= shift
        departure.save()
    for packet in FoodHandlerArchivedPacket.objects.all():
        packet.archived_at -= shift
        packet.save()


def test_a_leaver_s_certificate_is_kept_for_the_retention_then_deleted_and_its_link_is_410(
    own_roster, doc_storage, reader_client
):
    write_roster(own_roster, [ANA, BO])
    first = run_job("update_food_handler_pdfs")
    assert first.status == "completed", first.error
    bo_file = FoodHandlerCertificate.objects.get(employee_id="L01-E002").document
    old_links = run_job("get_food_handler_links").result
    bo_link, old_packet = link_of(old_links, "L01-E002"), packet_link(old_links, "L01")

    write_roster(own_roster, [ANA])  # Bo leaves
    second = run_job("update_food_handler_pdfs")
    assert second.result["retention"] == {"certificates_deleted": 0, "packets_deleted": 0}
    assert not FoodHandlerCertificate.objects.filter(employee_id="L01-E002").exists()
    departure = FoodHandlerDeparture.objects.get(employee_id="L01-E002")
    assert departure.document == bo_file and departure.purged_at is None
    (replaced,) = FoodHandlerArchivedPacket.objects.all()
    assert replaced.kind == "superseded" and replaced.location_id == "L01"
    # Within the retention: the file and the links made before still answer.
    assert documents.exists(bo_file)
    assert reader_client.get(bo_link).status_code == 200
    assert reader_client.get(old_packet).status_code == 200
    assert "L01-E002" not in str(run_job("get_food_handler_links").result)

    age(91)  # past the default 90 days, before any run deleted anything
    assert documents.exists(bo_file)
    links.assert_json_error(reader_client.get(bo_link), 410)  # the file is there: still 410
    links.assert_json_error(reader_client.head(bo_link), 410)

    third = run_job("update_food_handler_pdfs")
    assert third.result["retention"] == {"certificates_deleted": 1, "packets_deleted": 1}
    assert not documents.exists(bo_file) and not documents.exists(replaced.document)
    assert FoodHandlerDeparture.objects.get(employee_id="L01-E002").purged_at is not None
    assert not FoodHandlerArchivedPacket.objects.exists()
    links.assert_json_error(reader_client.get(bo_link), 410)
    links.assert_json_error(reader_client.get(old_packet), 410)
    # Ana's certificate and the current packet are untouched.
    ana = FoodHandlerCertificate.objects.get(employee_id="L01-E001")
    assert documents.exists(ana.document)
    assert documents.exists(FoodHandlerPacket.objects.get(location_id="L01").document)


def test_a_file_a_current_record_still_names_is_not_deleted_but_the_leaver_s_link_is_410(
    own_roster, doc_storage, reader_client, settings
):
    settings.FOOD_HANDLER_RETENTION_DAYS = 0  # deleted on the run that sees them leave
    same = certificate("Same Scan", "C-1", sample.FAR)  # one file for two people
    write_roster(own_roster, [ANA, BO], pdf={"C-1": same, "C-2": same})
    run_job("update_food_handler_pdfs")
    rows = {r.employee_id: r for r in FoodHandlerCertificate.objects.all()}
    assert rows["L01-E001"].document == rows["L01-E002"].document
    bo_link = link_of(run_job("get_food_handler_links").result, "L01-E002")
    ana_link = link_of(run_job("get_food_handler_links").result, "L01-E001")

    write_roster(own_roster, [ANA], pdf={"C-1": same})
    task = run_job("update_food_handler_pdfs")

    assert task.result["retention"]["certificates_deleted"] == 0
    assert documents.exists(rows["L01-E001"].document)
    links.assert_json_error(reader_client.get(bo_link), 410)
    assert reader_client.get(ana_link).status_code == 200


def test_someone_who_comes_back_within_the_retention_is_on_file_again(
    own_roster, doc_storage, reader_client
):
    write_roster(own_roster, [ANA, BO])
    run_job("update_food_handler_pdfs")
    write_roster(own_roster, [ANA])
    run_job("update_food_handler_pdfs")
    assert FoodHandlerDeparture.objects.filter(employee_id="L01-E002").exists()

    write_roster(own_roster, [ANA, BO])
    back = run_job("update_food_handler_pdfs")
    assert back.result["locations"]["L01"]["valid"] == 2
    assert not FoodHandlerDeparture.objects.exists()
    age(365)
    assert run_job("update_food_handler_pdfs").result["retention"]["certificates_deleted"] == 0
    bo_link = link_of(run_job("get_food_handler_links").result, "L01-E002")
    assert reader_client.get(bo_link).status_code == 200


def test_a_location_gone_from_the_roster_takes_its_people_and_packet_with_it(
    own_roster, doc_storage, settings
):
    write_roster(own_roster, [ANA, CY])
    run_job("update_food_handler_pdfs")
    cy_file = FoodHandlerCertificate.objects.get(employee_id="L02-E001").document
    l02_packet = FoodHandlerPacket.objects.get(location_id="L02").document

    write_roster(own_roster, [ANA])  # L02 closed
    only_l01 = run_job("update_food_handler_pdfs", {"locations": ["L01"]})
    assert only_l01.result["checked"] == ["L01"]
    assert FoodHandlerCertificate.objects.filter(location_id="L02").exists()  # not asked

    settings.FOOD_HANDLER_RETENTION_DAYS = 0
    full = run_job("update_food_handler_pdfs")
    assert full.result["retention"] == {"certificates_deleted": 1, "packets_deleted": 1}
    assert not FoodHandlerCertificate.objects.filter(location_id="L02").exists()
    assert not FoodHandlerPacket.objects.filter(location_id="L02").exists()
    assert not documents.exists(cy_file) and not documents.exists(l02_packet)
    result = run_job("get_food_handler_links").result
    assert [loc["location_id"] for loc in result["locations"]] == ["L01"]


def test_report_packets_go_after_the_retention_and_reports_delete_nothing(
    own_roster, doc_storage, reader_client
):
    write_roster(own_roster, [ANA])
    run_job("update_food_handler_pdfs")
    report = run_job("update_food_handler_pdfs", {"as_of": "2024-01-01"})
    (archived,) = FoodHandlerArchivedPacket.objects.filter(kind="report")
    url = report.result["packets"]["L01"]["url"]
    assert reader_client.get(url).status_code == 200
    age(91)
    # A report is no change: it does not sweep either.
    assert "retention" not in run_job("update_food_handler_pdfs", {"as_of": "2024-02-01"}).result
    assert documents.exists(archived.document)
    swept = run_job("update_food_handler_pdfs")
    assert swept.result["retention"]["packets_deleted"] == 1
    assert not documents.exists(archived.document)
    links.assert_json_error(reader_client.get(url), 410)
    assert FoodHandlerArchivedPacket.objects.filter(kind="report").count() == 1  # the new one


def test_a_departure_is_forgotten_once_no_link_can_need_it(own_roster, doc_storage, settings):
    settings.FOOD_HANDLER_RETENTION_DAYS = 0
    write_roster(own_roster, [ANA, BO])
    run_job("update_food_handler_pdfs")
    write_roster(own_roster, [ANA])
    run_job("update_food_handler_pdfs")
    departure = FoodHandlerDeparture.objects.get()
    assert departure.purged_at is not None
    departure.purged_at = timezone.now() - timedelta(seconds=settings.DOCUMENT_LINK_SECONDS + 1)
    departure.save()
    run_job("update_food_handler_pdfs")
    assert not FoodHandlerDeparture.objects.exists()
