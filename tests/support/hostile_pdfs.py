"""Hostile and odd PDFs, written byte by byte (no PDF library in the way): a
decompression bomb, a file of thousands of pages, a blank page."""

from __future__ import annotations

import zlib

FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
PAGE_TEXT = b"BT /F1 12 Tf 72 720 Td (Food Handler Card) Tj ET"


def raw_pdf(objects: list[bytes]) -> bytes:
    """A PDF whose object ``i + 1`` is ``objects[i]``; object 1 is the catalog."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def one_page(contents: bytes, *, flate: bool = False) -> bytes:
    """One letter page drawing ``contents`` (a content stream), Helvetica as /F1."""
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            stream(contents, b"/Filter /FlateDecode" if flate else b""),
            FONT,
        ]
    )


def blank_page() -> bytes:
    """A valid one-page PDF that draws nothing (a scan that came out empty)."""
    return one_page(b"")


def decompression_bomb(inflated: int = 1 << 30) -> bytes:
    """One page whose Flate content stream is about ``inflated`` zero bytes: about 1 MB
    of file for 1 GiB (deflate's best ratio, 1:1032). Built a MiB at a time."""
    deflater = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    parts = [deflater.compress(chunk) for _ in range(inflated // len(chunk))]
    parts.append(deflater.flush())
    return one_page(b"".join(parts), flate=True)


def many_pages(count: int, *, declared: int | None = None) -> bytes:
    """``count`` pages sharing one content stream; ``/Count`` says ``declared`` (a liar)
    when given, else the truth."""
    first_page = 5
    kids = b" ".join(b"%d 0 R" % (first_page + i) for i in range(count))
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R "
        b"/Resources << /Font << /F1 4 0 R >> >> >>"
    )
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % (declared or count),
            stream(PAGE_TEXT),
            FONT,
        ]
        + [page] * count
    )


def image_page() -> bytes:
    """One page that only paints an image (a scanned card): no text, not blank."""
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /XObject << /Im1 5 0 R >> >> >>",
            stream(b"q 300 0 0 200 72 500 cm /Im1 Do Q"),
            stream(
                b"\x00\x80\xff\x80",
                b"/Type /XObject /Subtype /Image /Width 2 /Height 2 "
                b"/ColorSpace /DeviceGray /BitsPerComponent 8",
            ),
        ]
    )


def with_unreferenced(content: bytes, marker: bytes) -> bytes:
    """``content`` (from ``one_page``) plus an object no page reaches, holding ``marker``."""
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            stream(content),
            FONT,
            stream(marker),
        ]
    )
