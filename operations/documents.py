"""Documents (food handler certificates, compliance packets) and the links that download them.

A document is stored once, named by the SHA-256 of its bytes, through
``storages["documents"]`` (the file system by default, any Django storage such as
an S3-compatible one by settings): the same bytes never take space twice, and a
name never changes meaning.

A link is a token signed with ``django.core.signing`` under a salt of its own, so
no other signed value of the project can pass for one. It carries the storage
name (a content hash: nothing to count up or guess) and the download filename,
and expires ``DOCUMENT_LINK_SECONDS`` after it was made; a certificate's link also
carries its employee id, so that it answers 410 once that person has left the
roster for longer than the retention (``operations.food_handler_retention``) even
when the file is still in storage. Signed, not encrypted: it shows which document
it opens, which only a holder of the link sees anyway.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.urls import reverse

SALT = "operations.documents.link"
MAX_TOKEN_LENGTH = 2048
FOLDERS = ("certificates", "packets")
_NAME = re.compile(r"food-handler/(certificates|packets)/[0-9a-f]{64}\.pdf")
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}\.pdf")
_NOT_IN_FILENAME = re.compile(r"[^A-Za-z0-9._-]")
MAX_EMPLOYEE_ID = 64


class BadLink(Exception):
    """A token that is not one of our links: altered, truncated, too long or made up."""


class LinkExpired(BadLink):
    """A genuine link past its ``DOCUMENT_LINK_SECONDS``."""


class DocumentGone(Exception):
    """A document named by a valid link is no longer in storage."""


@dataclass(frozen=True)
class Link:
    name: str
    filename: str
    employee: str = ""


def storage() -> Storage:
    return storages["documents"]


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def name_for(folder: str, digest: str) -> str:
    """The storage name of the document of hash ``digest`` in ``folder``."""
    if folder not in FOLDERS:
        raise ValueError(f"unknown document folder {folder!r}")
    return f"food-handler/{folder}/{digest}.pdf"


def store(folder: str, content: bytes) -> tuple[str, str]:
    """Save ``content`` as ``food-handler/<folder>/<sha256>.pdf`` unless it is there already;
    returns (storage name, hash)."""
    digest = sha256(content)
    name = name_for(folder, digest)
    target = storage()
    if not target.exists(name):
        saved = target.save(name, ContentFile(content))
        if saved != name:  # a concurrent run stored the same bytes first: keep one copy
            target.delete(saved)
    return name, digest


def delete(name: str) -> None:
    """Remove ``name`` from storage (nothing when it is already gone)."""
    if _NAME.fullmatch(name):
        storage().delete(name)


def exists(name: str) -> bool:
    return bool(name) and storage().exists(name)


def read(name: str) -> bytes:
    """The bytes of ``name``; DocumentGone when storage no longer has it."""
    try:
        with storage().open(name, "rb") as fh:
            return fh.read()
    except FileNotFoundError as exc:
        raise DocumentGone(name) from exc


def size(name: str) -> int:
    """The size of ``name`` in bytes; DocumentGone when storage no longer has it."""
    if not storage().exists(name):
        raise DocumentGone(name)
    try:
        return storage().size(name)
    except FileNotFoundError as exc:
        raise DocumentGone(name) from exc


def download_filename(stem: str) -> str:
    """``<stem>.pdf`` with ``_`` for every character a link's filename may not hold: the
    stem carries roster ids, which may hold any (a space, a slash, a quote, an accent)."""
    return f"{_NOT_IN_FILENAME.sub('_', stem)}.pdf"


def sign(name: str, filename: str, employee: str = "") -> str:
    """A token for ``name``, downloaded as ``filename`` (the certificate of ``employee``,
    when given); valid for DOCUMENT_LINK_SECONDS."""
    if (
        not _NAME.fullmatch(name)
        or not _FILENAME.fullmatch(filename)
        or len(employee) > MAX_EMPLOYEE_ID
    ):
        raise ValueError(f"not a document link: {name!r} as {filename!r}")
    data = {"n": name, "f": filename} | ({"e": employee} if employee else {})
    return signing.dumps(data, salt=SALT, compress=True)


def link_path(name: str, filename: str, employee: str = "") -> str:
    """The site path (``/documents/<token>``) that downloads ``name`` as ``filename``."""
    return reverse("document-download", kwargs={"token": sign(name, filename, employee)})


def unsign(token: str) -> Link:
    """The link a token stands for; LinkExpired past its lifetime, BadLink when it is not
    a token we made (the signature is checked before anything in it is read)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise BadLink("invalid link")
    try:
        data = signing.loads(token, salt=SALT, max_age=settings.DOCUMENT_LINK_SECONDS)
    except signing.SignatureExpired as exc:
        raise LinkExpired("link expired") from exc
    except (signing.BadSignature, ValueError) as exc:
        raise BadLink("invalid link") from exc
    if not isinstance(data, dict):
        raise BadLink("invalid link")
    name, filename, employee = data.get("n"), data.get("f"), data.get("e", "")
    if not (
        isinstance(name, str)
        and isinstance(filename, str)
        and isinstance(employee, str)
        and _NAME.fullmatch(name)
        and _FILENAME.fullmatch(filename)
        and len(employee) <= MAX_EMPLOYEE_ID
    ):
        raise BadLink("invalid link")
    return Link(name, filename, employee)
