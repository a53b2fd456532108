"""PDFs: which certificate files we accept, and the compliance packet built from them.

A file is a certificate only if pypdf reads it, it has a page, and it can be
copied into a packet: an HTML error page saved as ``.pdf``, an empty or a
truncated download would otherwise reach a health inspector as a blank page.
The packet is a generated cover page (fpdf2) followed by every current
certificate (pypdf). Both are byte-for-byte reproducible from the same input,
so an unchanged location yields the same packet hash and nothing new is stored.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from fpdf import FPDF
from pypdf import PdfReader, PdfWriter
from pypdf.errors import PyPdfError

PDF_MAGIC = b"%PDF-"
HEADER_WINDOW = 1024  # readers accept junk before %PDF- in the first 1 KB, and so do we
EOF_WINDOW = 2048
PRODUCER = "operations.pdfs"


class InvalidPdf(ValueError):
    """Not an acceptable certificate; the message is the reason, for people."""


@dataclass(frozen=True)
class CoverRow:
    """One food handler on a packet's cover page."""

    employee: str
    job: str
    card_number: str
    expires_on: date | None
    status: str


# What pypdf raises on a file it cannot read or copy: broken, hostile or merely odd.
_UNREADABLE = (
    PyPdfError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    RecursionError,
    NotImplementedError,
)


def _reader(content: bytes) -> PdfReader:
    """A pypdf reader on ``content``; InvalidPdf naming what is wrong with the file."""
    if not content:
        raise InvalidPdf("empty file")
    start = content.find(PDF_MAGIC, 0, HEADER_WINDOW)
    if start < 0:
        head = content[:HEADER_WINDOW].lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<")):
            raise InvalidPdf("not a PDF: an HTML page (an error page saved as a PDF?)")
        raise InvalidPdf("not a PDF (no %PDF- header)")
    if b"%%EOF" not in content[-EOF_WINDOW:]:
        raise InvalidPdf("truncated PDF (no end-of-file marker)")
    try:
        reader = PdfReader(io.BytesIO(content), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise InvalidPdf("encrypted PDF")
        return reader
    except InvalidPdf:
        raise
    except _UNREADABLE as exc:
        raise InvalidPdf(f"unreadable PDF ({exc.__class__.__name__})") from exc


def check_pdf(content: bytes) -> int:
    """The page count of an acceptable certificate; InvalidPdf with the reason otherwise.

    The file is also copied once into a new PDF, as the packet will copy it, so that a
    file pypdf opens but cannot merge is refused now rather than break a packet later.
    """
    reader = _reader(content)
    try:
        pages = len(reader.pages)
        if pages < 1:
            raise InvalidPdf("PDF without pages")
        writer = PdfWriter()
        writer.append(reader)
        writer.write(io.BytesIO())
    except InvalidPdf:
        raise
    except _UNREADABLE as exc:
        raise InvalidPdf(f"unreadable PDF ({exc.__class__.__name__})") from exc
    return pages


def _latin1(text: str) -> str:
    """``text`` in the core fonts' Latin-1: accents kept where Latin-1 has them, others
    reduced to their base letter, anything else '?'. Never fails on a name."""
    out = []
    for char in str(text):
        try:
            char.encode("latin-1")
            out.append(char)
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", char).encode("latin-1", "ignore").decode()
            out.append(base or "?")
    return "".join(out)


def cover_page(
    *,
    location_id: str,
    location_name: str,
    as_of: date,
    rows: Sequence[CoverRow],
    counts: dict[str, int],
) -> bytes:
    """The packet's first page(s): who handles food at the location and each card's status."""
    pdf = FPDF(format="letter")
    pdf.set_compression(True)
    # Fixed metadata: the same input gives the same bytes (and the same content hash).
    pdf.set_creation_date(datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC))
    pdf.set_producer(PRODUCER)
    pdf.set_creator(PRODUCER)
    title = f"Food handler cards: {location_id}"
    pdf.set_title(_latin1(title))
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, _latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 11)
    where = f"Location {location_id}" + (f" - {location_name}" if location_name else "")
    pdf.cell(0, 7, _latin1(where), new_x="LMARGIN", new_y="NEXT")
    pdf.cell(
        0,
        7,
        f"Statuses as of {as_of.isoformat()} (California food handler cards: "
        "within 30 days of hire, valid three years)",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    summary = ", ".join(f"{status} {count}" for status, count in counts.items())
    pdf.cell(0, 7, f"{len(rows)} food handlers: {summary}", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(
        0,
        7,
        "The certificates of the valid and expiring cards follow, in this order.",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(3)
    pdf.set_font("Helvetica", "", 9)
    with pdf.table(
        col_widths=(34, 20, 18, 14, 14), text_align="LEFT", line_height=5.5, repeat_headings=1
    ) as table:
        heading = table.row()
        for label in ("Employee", "Job", "Card number", "Expires", "Status"):
            heading.cell(label)
        for row in rows:
            line = table.row()
            for value in (
                row.employee,
                row.job,
                row.card_number or "-",
                row.expires_on.isoformat() if row.expires_on else "-",
                row.status,
            ):
                line.cell(_latin1(value))
    return bytes(pdf.output())


def build_packet(cover: bytes, certificates: Sequence[bytes]) -> bytes:
    """The cover followed by every certificate, as one PDF (reproducible bytes)."""
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(cover)))
    for content in certificates:
        writer.append(_reader(content))
    writer.add_metadata({"/Producer": PRODUCER})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def page_count(content: bytes) -> int:
    return len(_reader(content).pages)
