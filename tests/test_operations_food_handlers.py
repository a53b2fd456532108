"""update_food_handler_pdfs on the sample roster: statuses recomputed from employees.json,
the deliberately bad certificates refused, real PDFs stored by hash, packets that parse,
and re-runs that fetch and store nothing new (file and HTTP sources alike). These runs
are as of today, the only date that changes the record (reports: test_food_handler_reports)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from operations import pdfs
from operations.jobs import food_handlers
from operations.models import FoodHandlerCertificate, FoodHandlerPacket
from operations.sources import FetchedDocument
from operations.sources.files import FileConnector
from tasks import tracker
from tests.support.celery_processes import celery_process, env_for
from tests.support.food_handlers import (
    AS_OF,
    BAD,
    FAR,
    ROSTER,
    STATUSES,
    certificate,
    certificate_answers,
    counting_server,
    expected_counts,
    expected_statuses,
    food_handlers_by_id,
    looks_like_a_pdf,
    person,
    stored_files,
    stored_state,
    today,
    without_reasons,
    write_roster,
)
from tests.support.jobs import run_job
from tests.support.watch import launch_and_watch

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    """Every message the job reports through ``TaskHandle.error`` (the real method runs)."""
    seen: list[str] = []
    original = tracker.TaskHandle.error

    def error(self, message: str) -> None:
        seen.append(message)
        original(self, message)

    monkeypatch.setattr(tracker.TaskHandle, "error", error)
    return seen


# -- the sample ----------------------------------------------------------------------------


def test_statuses_errors_documents_and_packets_match_the_roster(sample_roster, errors):
    handlers = food_handlers_by_id()
    # The test's own reading of the files agrees with the documented bad certificates.
    unreadable = {
        emp_id
        for emp_id, e in handlers.items()
        if e["food_handler"] and not looks_like_a_pdf(ROSTER / e["food_handler"]["certificate_url"])
    }
    assert unreadable == set(BAD)
    statuses = expected_statuses()

    task = run_job("update_food_handler_pdfs")  # as of today: the record

    assert task.status == "completed_with_errors", task.error
    assert task.result["as_of"] == today().isoformat() and task.result["report"] is False
    counts = expected_counts(statuses)
    assert task.result["locations"] == counts
    assert task.result["checked"] == sorted(counts)
    assert task.progress == {"current": 12, "total": 12, "message": task.progress_message}
    totals = Counter(statuses.values())
    assert task.result["totals"] == {s: totals[s] for s in STATUSES}
    assert task.result["food_handlers"] == len(handlers) == 775
    # Only ids in the result: no employee's name.
    text = json.dumps(task.result)
    assert not [e["name"] for e in handlers.values() if e["name"] in text]
    # The refused certificates: errors naming the employee (id and name) and the reason.
    assert set(task.result["failed"]) == set(BAD)
    assert task.error_count == len(errors) == len(BAD)
    reasons = {"html": "HTML", "empty": "empty", "truncated": "truncated", "missing": "not found"}
    for emp_id, kind in BAD.items():
        (message,) = [m for m in errors if m.startswith(f"{emp_id} ")]
        assert handlers[emp_id]["name"] in message
        assert handlers[emp_id]["food_handler"]["card_number"] in message
        assert reasons[kind] in message and reasons[kind] in task.result["failed"][emp_id]
        assert statuses[emp_id] == "overdue"  # a refused PDF is no card on file

    rows = {r.employee_id: r for r in FoodHandlerCertificate.objects.all()}
    assert {k: r.status for k, r in rows.items()} == statuses
    # Stored certificates: the sample's bytes, real PDFs, named by their SHA-256.
    folder = sample_roster / "food-handler" / "certificates"
    for emp_id, row in rows.items():
        card = handlers[emp_id]["food_handler"]
        assert row.card_number == (card["card_number"] if card else "")
        if emp_id in BAD or not card:
            assert row.document == "" and row.content_hash == ""
            continue
        content = (sample_roster / row.document).read_bytes()
        assert content == (ROSTER / card["certificate_url"]).read_bytes()
        assert row.document == f"food-handler/certificates/{row.content_hash}.pdf"
        assert hashlib.sha256(content).hexdigest() == row.content_hash
    files = sorted(folder.iterdir())
    assert len(files) == sum(1 for r in rows.values() if r.document) == 755 - len(BAD)
    for path in files:
        content = path.read_bytes()
        assert path.name == f"{hashlib.sha256(content).hexdigest()}.pdf"
        assert len(PdfReader(io.BytesIO(content)).pages) == 1

    # Packets: cover page(s), then every current certificate, in the cover's order.
    assert FoodHandlerPacket.objects.count() == 12
    for packet in FoodHandlerPacket.objects.all():
        content = (sample_roster / packet.document).read_bytes()
        assert packet.document == f"food-handler/packets/{packet.content_hash}.pdf"
        assert hashlib.sha256(content).hexdigest() == packet.content_hash
        assert packet.counts == counts[packet.location_id] and packet.as_of == today()
        mine = sorted(
            (e for e in handlers.values() if e["location_id"] == packet.location_id),
            key=lambda e: (e["name"].lower(), e["employee_id"]),
        )
        current = [e for e in mine if statuses[e["employee_id"]] in ("valid", "expiring")]
        reader = PdfReader(io.BytesIO(content))
        cover_pages = len(reader.pages) - len(current)  # each sample certificate is one page
        assert 1 <= cover_pages <= 4
        cover = "\n".join(page.extract_text() for page in reader.pages[:cover_pages])
        assert f"Location {packet.location_id}" in cover and today().isoformat() in cover
        assert "REPORT" not in cover
        for e in mine:
            if e["food_handler"]:
                assert e["food_handler"]["card_number"] in cover, e["employee_id"]
        for page, e in zip(reader.pages[cover_pages:], current, strict=True):
            text = page.extract_text()
            assert "California Food Handler Card" in text
            assert e["food_handler"]["card_number"] in text


def test_a_second_run_fetches_and_stores_nothing_new_over_http(settings, doc_storage):
    with counting_server() as server:
        settings.ROSTER_SOURCE_URL = f"{server.base}/roster"
        settings.SOURCE_TOKEN = "test-token"
        settings.SOURCE_PAGE_SIZE = 100  # the roster comes in several pages
        first = run_job("update_food_handler_pdfs")
        assert first.status == "completed_with_errors", first.error
        on_disk = sum(
            1
            for e in food_handlers_by_id().values()
            if e["food_handler"] and (ROSTER / e["food_handler"]["certificate_url"]).is_file()
        )
        assert certificate_answers(server) == {200: on_disk, 404: 2}
        files, state = stored_files(doc_storage), stored_state()
        server.answered.clear()

        second = run_job("update_food_handler_pdfs")

        assert certificate_answers(server) == {304: on_disk, 404: 2}  # not one download
    assert stored_files(doc_storage) == files
    assert stored_state() == state
    assert second.status == "completed_with_errors"
    assert without_reasons(second.result) == without_reasons(first.result)
    assert set(second.result["failed"]) == set(BAD)
    # Still refused, and said so; the unchanged file was not downloaded to find out again.
    for emp_id, kind in BAD.items():
        expected = "not found" if kind == "missing" else "unchanged at the source"
        assert expected in second.result["failed"][emp_id]


def test_file_and_http_sources_agree_and_a_file_rerun_stores_nothing(settings, sample_roster):
    by_file = run_job("update_food_handler_pdfs")
    files, state = stored_files(sample_roster), stored_state()
    etags = dict(FoodHandlerCertificate.objects.values_list("employee_id", "source_etag"))
    packets = dict(FoodHandlerPacket.objects.values_list("location_id", "content_hash"))
    again = run_job("update_food_handler_pdfs")
    assert without_reasons(again.result) == without_reasons(by_file.result)
    assert stored_files(sample_roster) == files and stored_state() == state
    assert dict(FoodHandlerCertificate.objects.values_list("employee_id", "source_etag")) == etags

    FoodHandlerCertificate.objects.all().delete()
    FoodHandlerPacket.objects.all().delete()
    shutil.rmtree(sample_roster)
    with counting_server() as server:
        settings.ROSTER_SOURCE_URL = f"{server.base}/roster"
        settings.SOURCE_TOKEN = "test-token"
        by_http = run_job("update_food_handler_pdfs")
    assert by_http.result == by_file.result  # the same reasons too: none names the source
    assert stored_state() == state
    assert dict(FoodHandlerPacket.objects.values_list("location_id", "content_hash")) == packets
    assert set(stored_files(sample_roster)) == set(files)


def test_locations_filter_and_unknown_locations(sample_roster):
    task = run_job("update_food_handler_pdfs", {"locations": ["L03", "L01"]})
    assert task.result["checked"] == ["L03", "L01"]
    assert set(task.result["locations"]) == {"L01", "L03"}
    assert set(FoodHandlerCertificate.objects.values_list("location_id", flat=True)) == {
        "L01",
        "L03",
    }
    assert task.result["locations"]["L03"] == expected_counts(expected_statuses())["L03"]
    bad = run_job("update_food_handler_pdfs", {"locations": ["L01", "L99", "X"]})
    assert bad.status == "failed" and bad.error == "unknown location(s): L99, X"


def test_an_unusable_roster_source_fails_the_task(settings, doc_storage):
    settings.ROSTER_SOURCE_URL = "http://127.0.0.1:9/roster"
    settings.SOURCE_MAX_RETRIES = 0
    task = run_job("update_food_handler_pdfs")
    assert task.status == "failed" and task.error.startswith("roster source unusable:")


# -- a small roster of our own: changes between runs ---------------------------------------


@pytest.fixture
def own_roster(settings, tmp_path, doc_storage) -> Path:
    root = tmp_path / "roster"
    settings.ROSTER_SOURCE_URL = f"file://{root}"
    return root


def test_a_changed_roster_between_runs(own_roster, doc_storage, errors):
    soon = (today() + timedelta(days=5)).isoformat()
    recently = (today() - timedelta(days=14)).isoformat()
    people = [
        person("L01-E001", "Ana Silva", hired="2020-01-01", card="C-1"),
        person("L01-E002", "Bo Chen", hired="2020-01-01", card="C-2", expires=soon),
        person("L01-E003", "Zoë Ñandú Łukasz 王", hired=recently),  # missing: new hire
        {**person("L01-E004", "Cy Host", hired="2020-01-01"), "handles_food": False},
        person("L02-E001", "Di Park", hired="2020-01-01", card="C-9"),
    ]
    write_roster(own_roster, people)
    first = run_job("update_food_handler_pdfs")
    assert first.status == "completed", first.error
    assert first.result["locations"]["L01"] == {
        "valid": 1,
        "expiring": 1,
        "expired": 0,
        "missing": 1,
        "overdue": 0,
    }
    kept = FoodHandlerCertificate.objects.get(employee_id="L01-E001").document
    assert kept

    # E001's certificate is replaced by an error page: refused, the accepted PDF of the same
    # card stays on file; E002 gets a new card (a new PDF); E003 leaves the location.
    (own_roster / "certificates" / "C-1.pdf").write_bytes(b"<html>gateway timeout</html>")
    people[1] = person("L01-E002", "Bo Chen", hired="2020-01-01", card="C-3", expires=FAR)
    write_roster(
        own_roster,
        [people[0], people[1], people[3], people[4]],
        pdf={"C-3": certificate("Bo Chen", "C-3", FAR)},
    )
    second = run_job("update_food_handler_pdfs", {"locations": ["L01"]})
    assert second.status == "completed_with_errors"
    assert list(second.result["failed"]) == ["L01-E001"]
    assert errors[-1].startswith("L01-E001 Ana Silva: certificate C-1 refused: not a PDF")
    rows = {r.employee_id: r for r in FoodHandlerCertificate.objects.all()}
    assert set(rows) == {"L01-E001", "L01-E002", "L02-E001"}  # E003 gone, L02 untouched
    assert rows["L01-E001"].document == kept and rows["L01-E001"].status == "valid"
    assert rows["L01-E002"].card_number == "C-3" and rows["L01-E002"].status == "valid"
    assert rows["L01-E002"].document != ""
    # A third run still reports the bad file (it is fetched again: we hold the older one).
    third = run_job("update_food_handler_pdfs", {"locations": ["L01"]})
    assert list(third.result["failed"]) == ["L01-E001"]
    assert FoodHandlerCertificate.objects.get(employee_id="L01-E001").document == kept


def test_a_document_lost_from_storage_is_fetched_again(own_roster, doc_storage):
    write_roster(own_roster, [person("L01-E001", "Ana Silva", hired="2020-01-01", card="C-1")])
    run_job("update_food_handler_pdfs")
    row = FoodHandlerCertificate.objects.get()
    (doc_storage / row.document).unlink()
    task = run_job("update_food_handler_pdfs")
    assert task.status == "completed"
    assert (doc_storage / row.document).read_bytes() == (
        own_roster / "certificates" / "C-1.pdf"
    ).read_bytes()


def test_a_malformed_record_is_an_error_and_the_rest_goes_on(own_roster, errors):
    people = [
        person("L01-E001", "Ana Silva", hired="2020-01-01", card="C-1"),
        {**person("L01-E002", "Bo Chen", hired="someday"), "hire_date": "someday"},
    ]
    write_roster(own_roster, people)
    task = run_job("update_food_handler_pdfs")
    assert task.status == "completed_with_errors"
    assert errors == [
        "malformed roster record: employee L01-E002 hire_date: 'someday' is not a date"
    ]
    assert task.result["locations"]["L01"]["valid"] == 1


def test_records_our_columns_or_dates_cannot_hold_are_errors_and_the_rest_goes_on(
    own_roster, errors
):
    """Each bad record is one error naming the employee; none is a traceback ending the job."""
    good = person("L01-E001", "Ana Silva", hired="2020-01-01", card="C-1")
    bad = {
        "L01-E002": ("certificate_url", "http://[x"),
        "L01-E003": ("certificate_url", "certificates/%00.pdf"),
        "L01-E004": ("certificate_url", "certificates/" + "c" * 500 + ".pdf"),
        "L01-E005": ("card_number", "C" * 65),
        "L01-E006": ("job", "J" * 65),
        "L01-E007": ("location_id", "L01" + "x" * 30),
        "L01-E008": ("hire_date", "9999-12-31"),
        "L01-E009": ("expires_on", "9999-12-31"),
        "L01-E010": ("issued_on", "0001-01-01"),
    }
    people = [good]
    for emp_id, (key, value) in bad.items():
        record = person(emp_id, f"Name {emp_id}", hired="2020-01-01", card=f"C-{emp_id}")
        if key in record:
            record[key] = value
        else:
            record["food_handler"][key] = value
        people.append(record)
    write_roster(own_roster, people, pdf={"C-1": certificate("Ana Silva", "C-1", FAR)})
    task = run_job("update_food_handler_pdfs")
    assert task.status == "completed_with_errors", task.error
    assert task.result["checked"] == ["L01"]
    assert task.result["locations"]["L01"]["valid"] == 1
    assert len(errors) == len(bad)
    for message, (emp_id, (key, _)) in zip(errors, bad.items(), strict=True):
        prefix = f"malformed roster record: employee {emp_id}"
        assert message.startswith((f"{prefix}:", f"{prefix} ")), message
        assert key in message, message
    assert list(FoodHandlerCertificate.objects.values_list("employee_id", flat=True)) == [
        "L01-E001"
    ]


def test_a_certificate_url_the_connector_cannot_use_is_refused_not_raised(own_roster):
    """Past parsing (a record made by hand), a URL that makes the source raise ValueError
    is a refused certificate."""
    write_roster(own_roster, [])
    handler = food_handlers.FoodHandler(
        "L01-E001",
        "Ana",
        "L01",
        "",
        "Cook",
        date(2020, 1, 1),
        food_handlers.Card("C-1", "", None, date(2027, 1, 1), "certificates/%00.pdf"),
    )

    class Raising(FileConnector):
        def fetch_document(self, ref: str, *, etag: str = "") -> FetchedDocument:
            raise ValueError("embedded null byte")

    held = food_handlers.fetch_certificate(Raising(f"file://{own_roster}"), handler, None)
    assert held.refused == "could not be fetched: embedded null byte" and not held.document


# -- the rule and the PDF check on their edges ---------------------------------------------


@pytest.mark.parametrize(
    ("expires", "on_file", "hired", "status"),
    [
        (AS_OF + timedelta(days=31), True, "2020-01-01", "valid"),
        (AS_OF + timedelta(days=30), True, "2020-01-01", "expiring"),
        (AS_OF, True, "2020-01-01", "expiring"),  # expires today: still valid today
        (AS_OF - timedelta(days=1), True, "2020-01-01", "expired"),
        (AS_OF + timedelta(days=400), False, "2025-05-16", "missing"),  # hire + 30 = as_of
        (AS_OF + timedelta(days=400), False, "2025-05-15", "overdue"),
        (None, False, "2025-06-15", "missing"),
        (None, False, "2019-01-01", "overdue"),
    ],
)
def test_the_rule_on_its_edges(expires, on_file, hired, status):
    card = None if expires is None else food_handlers.Card("C", "", None, expires, "c.pdf")
    handler = food_handlers.FoodHandler(
        "L01-E001", "A", "L01", "", "Cook", date.fromisoformat(hired), card
    )
    assert food_handlers.card_status(handler, on_file, AS_OF) == status


def test_only_readable_pdfs_with_pages_are_accepted():
    good = certificate("Ana", "C-1", "2027-01-01")
    assert pdfs.check_pdf(good).pages == 1
    assert pdfs.check_pdf(b"\n\n" + good).pages == 1  # junk before the header, as readers allow
    no_pages = io.BytesIO()
    PdfWriter().write(no_pages)
    cases = {
        b"": "empty file",
        b"<!DOCTYPE html><html><body>503</body></html>": "HTML page",
        b"PK\x03\x04 a zip": "no %PDF- header",
        good[: len(good) // 3]: "truncated",
        good[: len(good) * 2 // 3]: "truncated",
        good[:-20]: "truncated",
        no_pages.getvalue(): "without pages",
        b"%PDF-1.4\n garbage garbage\n%%EOF\n": "unreadable",
    }
    for content, reason in cases.items():
        with pytest.raises(pdfs.InvalidPdf, match=reason):
            pdfs.check_pdf(content)


def test_the_packet_is_reproducible_and_survives_any_name():
    rows = [pdfs.CoverRow("Zoë Łukasz 王 (L01-E001)", "Cook", "C-1", date(2027, 1, 1), "valid")]
    counts = dict.fromkeys(STATUSES, 0) | {"valid": 1}
    cert = pdfs.check_pdf(certificate("Zoe", "C-1", "2027-01-01"))
    make = lambda: pdfs.build_packet(  # noqa: E731
        pdfs.cover_page(location_id="L01", location_name="", as_of=AS_OF, rows=rows, counts=counts),
        [cert],
    )
    packet = make()
    assert make() == packet
    reader = PdfReader(io.BytesIO(packet))
    assert len(reader.pages) == 2
    assert "Zo" in reader.pages[0].extract_text() and "C-1" in reader.pages[0].extract_text()


# -- end to end: REST launch, a real Celery worker, a WebSocket watching ---------------------


@pytest.mark.slow
def test_launched_over_rest_run_by_a_worker_and_watched_over_websocket(
    queue,
    runner,
    doc_storage,
    tmp_path,
):
    """A runner with the reader role launches on daphne; a worker process fetches from the
    HTTP source; the WebSocket client sees the steps, the errors and the result, in order."""

    from django.conf import settings
    from django.contrib.auth.models import Group

    from tasks.auth.bearer import issue_local_token
    from tests.support.servers import Daphne

    runner.groups.add(Group.objects.get_or_create(name="TaskStatus.FoodHandler.Read")[0])
    token = issue_local_token(runner)
    statuses = expected_statuses()
    with counting_server() as source:
        env = env_for(
            queue,
            ROSTER_SOURCE_URL=f"{source.base}/roster",
            SOURCE_TOKEN="test-token",
            DOCUMENT_STORAGE_BACKEND=("django.core.files.storage.FileSystemStorage"),
            DOCUMENT_STORAGE_OPTIONS=json.dumps({"location": str(doc_storage)}),
        )
        server = Daphne(env).start()
        try:
            with celery_process("worker", env, tmp_path, "ready."):
                seen = launch_and_watch(server, token, "update_food_handler_pdfs", {})
        finally:
            server.stop()
    assert settings.ROSTER_SOURCE_URL != f"{source.base}/roster"  # only the worker used it
    assert [p["status"] for p in seen][0] == "started"
    assert seen[-1]["status"] == "completed_with_errors", seen[-1]["error"]
    assert {"processing", "error"} <= {p["status"] for p in seen}
    versions = [p["version"] for p in seen]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    steps = [p["progress"]["current"] for p in seen if p.get("progress")]
    assert steps == sorted(steps) and steps[-1] == 12
    errors_seen = {p["error"] for p in seen if p["status"] == "error"}
    assert errors_seen and all(any(m.startswith(f"{e} ") for e in BAD) for m in errors_seen)
    result = seen[-1]["result"]
    assert result["locations"] == expected_counts(statuses)
    assert set(result["failed"]) == set(BAD)
    assert certificate_answers(source)[200] == 755 - 2
    assert {r.employee_id: r.status for r in FoodHandlerCertificate.objects.all()} == statuses
    packet = FoodHandlerPacket.objects.get(location_id="L05")
    assert PdfReader(io.BytesIO((doc_storage / packet.document).read_bytes())).pages
