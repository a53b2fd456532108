"""A certificate is a real, bounded PDF: a blank first page, a decompression bomb and a
30,000-page file are refused quickly and in little memory, each an error naming the
employee while the job goes on, and a packet holds only what the check re-wrote."""

from __future__ import annotations

import io
import time
import tracemalloc

import pytest
from pypdf import PdfReader

from operations import documents, pdfs
from operations.models import FoodHandlerCertificate, FoodHandlerPacket
from tests import test_operations_food_handlers as sample
from tests.support import hostile_pdfs
from tests.support.food_handlers import certificate, person, write_roster
from tests.support.jobs import run_job

pytestmark = pytest.mark.django_db(transaction=True)
MIB = 1 << 20
errors = sample.errors  # every message the job reports (fixture)
own_roster = sample.own_roster  # a roster of our own in a temporary directory (fixture)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """About 1 MB that inflates to 1 GiB of zeros (one Flate content stream)."""
    return hostile_pdfs.decompression_bomb(1 << 30)


def measured(content: bytes) -> tuple[str, float, int]:
    """The refusal, the seconds it took (untraced) and the peak Python memory (traced)."""
    began = time.monotonic()
    with pytest.raises(pdfs.InvalidPdf) as refused:
        pdfs.check_pdf(content)
    seconds = time.monotonic() - began
    tracemalloc.start()
    try:
        with pytest.raises(pdfs.InvalidPdf):
            pdfs.check_pdf(content)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return str(refused.value), seconds, peak


def test_a_decompression_bomb_is_refused_early_in_little_memory(bomb):
    assert len(bomb) < 1.1 * MIB
    reason, seconds, peak = measured(bomb)
    print(f"bomb ({len(bomb)} bytes -> 1 GiB): {seconds:.3f} s, peak {peak / MIB:.1f} MiB")
    assert "inflates to more than 50 MB" in reason
    # 1 GiB inflated would take seconds and a GiB; the check stops after the 50 MB budget.
    assert seconds < 2
    assert peak < 32 * MIB


def test_thirty_thousand_pages_are_refused_fast_even_when_the_count_lies():
    for declared, expected in ((None, "30000 pages"), (1, "more than 20 pages")):
        content = hostile_pdfs.many_pages(30_000, declared=declared)
        reason, seconds, peak = measured(content)
        print(f"30,000 pages (/Count {declared or 30_000}): {seconds:.3f} s, {peak / MIB:.1f} MiB")
        assert expected in reason and "at most 20" in reason
        assert seconds < 3
        assert peak < 128 * MIB


def test_a_blank_first_page_is_refused_and_an_image_or_text_is_enough():
    with pytest.raises(pdfs.InvalidPdf, match="blank first page"):
        pdfs.check_pdf(hostile_pdfs.blank_page())
    with pytest.raises(pdfs.InvalidPdf, match="blank first page"):
        pdfs.check_pdf(hostile_pdfs.one_page(b"BT /F1 12 Tf 72 720 Td (   ) Tj ET"))
    assert pdfs.check_pdf(hostile_pdfs.image_page()).pages == 1
    assert pdfs.check_pdf(hostile_pdfs.one_page(hostile_pdfs.PAGE_TEXT)).pages == 1
    assert pdfs.check_pdf(hostile_pdfs.many_pages(20)).pages == 20


def test_the_limits_are_settings(settings):
    two_pages = hostile_pdfs.many_pages(2)
    assert pdfs.check_pdf(two_pages).pages == 2
    settings.FOOD_HANDLER_PDF_MAX_PAGES = 1
    with pytest.raises(pdfs.InvalidPdf, match="2 pages"):
        pdfs.check_pdf(two_pages)
    settings.FOOD_HANDLER_PDF_MAX_PAGES = 20
    settings.FOOD_HANDLER_PDF_MAX_INFLATED_BYTES = 1_000_000
    with pytest.raises(pdfs.InvalidPdf, match="more than 1 MB"):
        pdfs.check_pdf(hostile_pdfs.decompression_bomb(4 * MIB))
    settings.FOOD_HANDLER_PDF_MAX_INFLATED_BYTES = 50_000_000
    settings.FOOD_HANDLER_PDF_CHECK_SECONDS = 0
    with pytest.raises(pdfs.InvalidPdf, match="took longer than 0 s"):
        pdfs.check_pdf(two_pages)


def test_what_passes_is_the_re_write_of_the_checked_pages_only():
    secret = b"UNCHECKED-BYTES-NO-PAGE-REACHES"
    content = hostile_pdfs.with_unreferenced(hostile_pdfs.PAGE_TEXT, secret)
    assert secret in content
    checked = pdfs.check_pdf(content)
    assert secret not in checked.content
    assert "Food Handler Card" in PdfReader(io.BytesIO(checked.content)).pages[0].extract_text()
    cover = certificate("Ana", "C-1", "2099-01-01")  # any PDF of our own
    packet = pdfs.build_packet(cover, [checked])
    assert secret not in packet and len(PdfReader(io.BytesIO(packet)).pages) == 2
    assert secret not in packet


def test_each_refusal_names_the_employee_and_the_job_goes_on(own_roster, doc_storage, bomb, errors):
    people = [
        person("L01-E001", "Ana Silva", hired="2020-01-01", card="C-1"),
        person("L01-E002", "Bo Blank", hired="2020-01-01", card="C-2"),
        person("L01-E003", "Cy Bomb", hired="2020-01-01", card="C-3"),
        person("L01-E004", "Di Pages", hired="2020-01-01", card="C-4"),
        person("L01-E005", "Ed Scan", hired="2020-01-01", card="C-5"),
    ]
    write_roster(
        own_roster,
        people,
        pdf={
            "C-1": certificate("Ana Silva", "C-1", "2099-01-01"),
            "C-2": hostile_pdfs.blank_page(),
            "C-3": bomb,
            "C-4": hostile_pdfs.many_pages(30_000),
            "C-5": hostile_pdfs.image_page(),
        },
    )
    began = time.monotonic()
    task = run_job("update_food_handler_pdfs")
    seconds = time.monotonic() - began
    print(f"job with a blank page, a bomb and 30,000 pages: {seconds:.2f} s")
    assert task.status == "completed_with_errors", task.error
    assert seconds < 15
    expected = {
        "L01-E002": ("Bo Blank", "C-2", "blank first page"),
        "L01-E003": ("Cy Bomb", "C-3", "inflates to more than 50 MB"),
        "L01-E004": ("Di Pages", "C-4", "30000 pages"),
    }
    assert sorted(task.result["failed"]) == sorted(expected)
    assert len(errors) == 3
    for emp_id, (name, card, reason) in expected.items():
        (message,) = [m for m in errors if m.startswith(f"{emp_id} ")]
        assert message.startswith(f"{emp_id} {name}: certificate {card} refused: ")
        assert reason in message and reason in task.result["failed"][emp_id]
    rows = {r.employee_id: r for r in FoodHandlerCertificate.objects.all()}
    assert {k: r.status for k, r in rows.items()} == {
        "L01-E001": "valid",
        "L01-E002": "overdue",
        "L01-E003": "overdue",
        "L01-E004": "overdue",
        "L01-E005": "valid",
    }
    assert not rows["L01-E003"].document and not rows["L01-E004"].document
    # Nothing refused was stored; the packet is the cover and the two accepted cards.
    stored = sorted(p.name for p in (doc_storage / "food-handler" / "certificates").iterdir())
    assert stored == sorted(f"{rows[e].content_hash}.pdf" for e in ("L01-E001", "L01-E005"))
    packet = FoodHandlerPacket.objects.get(location_id="L01")
    pages = PdfReader(io.BytesIO(documents.read(packet.document))).pages
    assert len(pages) == 3
    assert "C-1" in pages[1].extract_text() and pages[2].extract_text().strip() == ""


def test_a_stored_certificate_that_fails_a_stricter_check_leaves_the_packet(
    own_roster, settings, errors
):
    """The packet re-checks what it takes from storage: a file accepted under looser limits
    is left out (an error naming the employee), never copied in as it is."""
    people = [
        person("L01-E001", "Ana Silva", hired="2020-01-01", card="C-1"),
        person("L01-E002", "Bo Long", hired="2020-01-01", card="C-2"),
    ]
    write_roster(
        own_roster,
        people,
        pdf={
            "C-1": certificate("Ana Silva", "C-1", "2099-01-01"),
            "C-2": hostile_pdfs.many_pages(3),
        },
    )
    first = run_job("update_food_handler_pdfs")
    assert first.status == "completed", first.error
    settings.FOOD_HANDLER_PDF_MAX_PAGES = 2
    second = run_job("update_food_handler_pdfs")  # C-2 unchanged at the source: not fetched
    assert second.status == "completed_with_errors"
    assert errors == [
        "L01-E002 Bo Long: certificate C-2 left out of the packet: "
        "3 pages (a certificate has at most 2)"
    ]
    assert "left out of the packet" in second.result["failed"]["L01-E002"]
    packet = FoodHandlerPacket.objects.get(location_id="L01")
    assert len(PdfReader(io.BytesIO(documents.read(packet.document))).pages) == 2
