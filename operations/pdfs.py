"""PDFs: which certificate files we accept, and the compliance packet built from them.

A file is a certificate only if pypdf reads it, it has at most
``FOOD_HANDLER_PDF_MAX_PAGES`` pages, its streams inflate to at most
``FOOD_HANDLER_PDF_MAX_INFLATED_BYTES`` in all, the check ends within
``FOOD_HANDLER_PDF_CHECK_SECONDS``, and its first page draws text or an image: an
HTML error page saved as ``.pdf``, an empty, truncated or blank download would
otherwise reach a health inspector as a blank page, and a decompression bomb or a
30,000-page file would exhaust the worker. The page count is read from the page tree
before it is walked, and each Flate stream is inflated in chunks against what is left
of the budget, so a hostile file is refused after a few megabytes of work.

What passes is re-written by pypdf from the checked pages alone (``CheckedPdf``):
the packet is built only from such re-writes, never from a byte stream as it came.
The packet is a generated cover page (fpdf2) followed by every current certificate
(pypdf). Both are byte-for-byte reproducible from the same input, so an unchanged
location yields the same packet hash and nothing new is stored.
"""

from __future__ import annotations

import io
import time
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from django.conf import settings
from fpdf import FPDF
from pypdf import (
    Configuration,
    PageObject,
    PdfReader,
    PdfWriter,
    apply_configuration,
    get_configuration,
)
from pypdf.errors import LimitReachedError, PyPdfError
from pypdf.generic import (
    ArrayObject,
    ContentStream,
    DictionaryObject,
    EncodedStreamObject,
    IndirectObject,
    StreamObject,
)

PDF_MAGIC = b"%PDF-"
HEADER_WINDOW = 1024  # readers accept junk before %PDF- in the first 1 KB, and so do we
EOF_WINDOW = 2048
PRODUCER = "operations.pdfs"
MB = 1_000_000
INFLATE_CHUNK = 1 << 20  # bytes of output per step when counting a Flate stream
FORM_DEPTH = 4  # form XObjects followed when looking for something drawn on page 1
TEXT_OPERATORS = (b"Tj", b"'", b'"')


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


@dataclass(frozen=True)
class Limits:
    """What one certificate may cost to check (the FOOD_HANDLER_PDF_* settings)."""

    max_pages: int
    max_inflated_bytes: int
    max_seconds: float

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            max_pages=settings.FOOD_HANDLER_PDF_MAX_PAGES,
            max_inflated_bytes=settings.FOOD_HANDLER_PDF_MAX_INFLATED_BYTES,
            max_seconds=settings.FOOD_HANDLER_PDF_CHECK_SECONDS,
        )


@dataclass(frozen=True)
class CheckedPdf:
    """A certificate that passed the check: ``content`` is pypdf's re-write of exactly the
    pages and objects that were checked, the only form a packet takes a certificate in."""

    pages: int
    content: bytes


class _Budget:
    """The inflated bytes and the seconds one file may still spend."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.left = limits.max_inflated_bytes
        self.deadline = time.monotonic() + limits.max_seconds

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise InvalidPdf(f"took longer than {self.limits.max_seconds:g} s to check")

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise InvalidPdf(
                f"inflates to more than {self.limits.max_inflated_bytes / MB:g} MB "
                "(a decompression bomb?)"
            )


def _reader_limits(limits: Limits) -> Configuration:
    """pypdf's own bounds (its Configuration, 7.x), tightened to ours."""
    inflated = max(limits.max_inflated_bytes, 1)
    overwrites = {
        "maximum_declared_stream_length": inflated,
        "array_based_stream_maximum_output_length": inflated,
        "jbig2_maximum_output_length": inflated,
        "lzw_maximum_output_length": inflated,
        "run_length_maximum_output_length": inflated,
        "zlib_maximum_output_length": inflated,
        "brotli_maximum_output_length": inflated,
        "image_maximum_buffer_size": inflated,
        # A page tree of max_pages leaves has far fewer inner nodes than this.
        "page_tree_maximum_entries": 2 * limits.max_pages + 16,
    }
    return get_configuration().with_overwrites(**overwrites)


def _page_count(reader: PdfReader, limits: Limits) -> int:
    """The number of pages, refused above the limit before the page tree is walked (its
    ``/Count``), and while it is walked (pypdf's entry limit) when the count lies."""
    declared = reader.root_object.get("/Pages", DictionaryObject()).get_object()
    count = declared.get("/Count") if isinstance(declared, DictionaryObject) else None
    too_many = f"a certificate has at most {limits.max_pages}"
    if isinstance(count, int) and count > limits.max_pages:
        raise InvalidPdf(f"{count} pages ({too_many})")
    try:
        pages = len(reader.pages)
    except LimitReachedError as exc:
        raise InvalidPdf(f"more than {limits.max_pages} pages ({too_many})") from exc
    if pages > limits.max_pages:
        raise InvalidPdf(f"{pages} pages ({too_many})")
    if pages < 1:
        raise InvalidPdf("PDF without pages")
    return pages


def _flate_fits(data: bytes, budget: _Budget) -> None:
    """Refuse a Flate stream that inflates beyond what is left of the budget, counting its
    output a chunk at a time and keeping none of it: a bomb costs the budget, not its size,
    and about a chunk of memory."""
    inflater = zlib.decompressobj()
    pending, total = data, 0
    try:
        while pending and not inflater.eof:
            budget.tick()
            out = inflater.decompress(pending, INFLATE_CHUNK)
            total += len(out)
            if total > budget.left:
                budget.spend(total)  # refuses
            pending = inflater.unconsumed_tail
            if not out:
                break
    except zlib.error:
        return  # pypdf's own decoder repairs what it can, within the limits set on it


def _inflate(stream: StreamObject, budget: _Budget) -> bytes:
    """A stream's decoded bytes, spent from the budget; refused beyond it."""
    if isinstance(stream, EncodedStreamObject):
        filters = stream.get("/Filter")
        first = filters[0] if isinstance(filters, ArrayObject) and filters else filters
        if first in ("/FlateDecode", "/Fl"):
            _flate_fits(stream._data, budget)
        try:
            # Any filter: pypdf stops at what is left of the budget (0 would mean no limit).
            with apply_configuration(zlib_maximum_output_length=max(budget.left, 1)):
                data = stream.get_data()
        except LimitReachedError:
            data = b""
            budget.spend(budget.left + 1)  # refuses
    else:
        data = stream.get_data()
    budget.spend(len(data))
    return data


def _walk(page: PageObject, budget: _Budget) -> None:
    """Decode every stream reachable from ``page`` (not through ``/Parent``: the other
    pages), which is everything a copy of the page carries into a packet."""
    seen: set[int] = set()
    todo: list[Any] = [page]
    while todo:
        budget.tick()
        obj = todo.pop()
        if isinstance(obj, IndirectObject):
            key = obj.idnum
            if key in seen:
                continue
            seen.add(key)
            obj = obj.get_object()
        if isinstance(obj, StreamObject):
            _inflate(obj, budget)
        if isinstance(obj, DictionaryObject):
            todo.extend(value for name, value in obj.items() if name != "/Parent")
        elif isinstance(obj, ArrayObject):
            todo.extend(obj)


def _shows_text(operands: list[Any], operator: bytes) -> bool:
    if operator in TEXT_OPERATORS:
        strings = operands[-1:]
    elif operator == b"TJ" and operands and isinstance(operands[0], list):
        strings = operands[0]
    else:
        return False
    return any(isinstance(s, str | bytes) and s.strip() for s in strings)


def _draws(content: Any, resources: Any, depth: int = 0) -> bool:
    """Whether a content stream shows text or paints an image (itself or in a form)."""
    if content is None:
        return False
    xobjects = resources.get("/XObject") if isinstance(resources, DictionaryObject) else None
    xobjects = xobjects.get_object() if xobjects is not None else None
    for operands, operator in content.operations:
        if operator == b"INLINE IMAGE" or _shows_text(operands, operator):
            return True
        if operator != b"Do" or not operands or not isinstance(xobjects, DictionaryObject):
            continue
        xobject = xobjects.get(operands[0])
        xobject = xobject.get_object() if xobject is not None else None
        if not isinstance(xobject, StreamObject):
            continue
        if xobject.get("/Subtype") == "/Image":
            return True
        if xobject.get("/Subtype") == "/Form" and depth < FORM_DEPTH:
            inner = xobject.get("/Resources", resources)
            if _draws(ContentStream(xobject, None), inner.get_object(), depth + 1):
                return True
    return False


def check_pdf(content: bytes, limits: Limits | None = None) -> CheckedPdf:
    """The checked certificate, re-written; InvalidPdf with the reason otherwise.

    Every stream the pages carry is decoded within the limits, page 1 must draw
    something, and the pages are copied into a new PDF, as the packet will copy them,
    so that a file pypdf opens but cannot merge is refused now rather than break a
    packet later.
    """
    limits = limits or Limits.from_settings()
    budget = _Budget(limits)
    if len(content) > limits.max_inflated_bytes:
        raise InvalidPdf(f"larger than {limits.max_inflated_bytes / MB:g} MB")
    with apply_configuration(_reader_limits(limits)):
        reader = _reader(content)
        try:
            pages = _page_count(reader, limits)
            writer = PdfWriter()
            for index in range(pages):
                budget.tick()
                page = writer.add_page(reader.pages[index])
                _walk(page, budget)
                if index == 0 and not _draws(page.get_contents(), page.get("/Resources")):
                    raise InvalidPdf("blank first page (no text or image drawn on it)")
            budget.tick()
            out = io.BytesIO()
            writer.write(out)
            budget.tick()
        except InvalidPdf:
            raise
        except LimitReachedError as exc:
            raise InvalidPdf(f"beyond the limits of a certificate ({exc})") from exc
        except _UNREADABLE as exc:
            raise InvalidPdf(f"unreadable PDF ({exc.__class__.__name__})") from exc
    return CheckedPdf(pages, out.getvalue())


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
    report: bool = False,
) -> bytes:
    """The packet's first page(s): who handles food at the location and each card's status;
    a report says so, so that nobody takes it for the current record."""
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
    if report:
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(
            0,
            7,
            f"REPORT as of {as_of.isoformat()}: not the current record of this location",
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.set_font("Helvetica", "", 11)
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


def build_packet(cover: bytes, certificates: Sequence[CheckedPdf]) -> bytes:
    """The cover followed by every certificate, as one PDF (reproducible bytes). Only
    checked certificates: their re-writes hold nothing the check did not decode."""
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(cover)))
    for checked in certificates:
        writer.append(PdfReader(io.BytesIO(checked.content)))
    writer.add_metadata({"/Producer": PRODUCER})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
