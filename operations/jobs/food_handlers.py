"""update_food_handler_pdfs: every food handler's certificate, card status and location packet.

The rule (California: every food handler holds a card within 30 days of hire,
valid three years), as of ``as_of``:

* with an accepted certificate on file for the current card: ``expired`` when it
  expired before ``as_of``, ``expiring`` when it expires within 30 days (on
  ``as_of`` + 30 at the latest), else ``valid``;
* without one (no card, or its PDF was refused or is missing and no accepted PDF
  of the same card number is on file): ``overdue`` when hired more than 30 days
  before ``as_of``, else ``missing``.

A certificate is fetched with the ETag we stored (conditional GET, or size and
mtime for files), so an unchanged one is not downloaded again; one that is not a
readable PDF is an ``error`` naming the employee and the job goes on; so is a
roster record our columns cannot hold (a value longer than its column, a date
outside 1900..2199, a certificate URL that does not parse). Accepted
files are stored by content hash (``operations.documents``). Per location, the
employees' rows are replaced in one transaction and the compliance packet (cover
page and every current certificate) is rebuilt; identical input gives an
identical packet, so a re-run with nothing changed stores nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal, overload
from urllib.parse import unquote, urlparse

from django.db import transaction

from tasks.tracker import TaskHandle

from .. import documents, pdfs
from ..models import FoodHandlerCertificate, FoodHandlerPacket, FoodHandlerStatus
from ..sources import Connector, DataNotFound, SourceError, roster_source
from . import JobFailed
from .columns import max_length
from .locations import MalformedData

GRACE = timedelta(days=30)
EXPIRING_WITHIN = timedelta(days=30)
STATUSES = [status.value for status in FoodHandlerStatus]
CURRENT = (FoodHandlerStatus.VALID.value, FoodHandlerStatus.EXPIRING.value)
# Roster dates outside these are typos; the bound also keeps ``hire_date + GRACE`` from
# overflowing at date.max.
EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2199, 12, 31)


# What our rows can hold: a longer value is a malformed record, not a DataError on save.
MAX_LENGTHS = {
    "employee_id": max_length(FoodHandlerCertificate, "employee_id"),
    "name": max_length(FoodHandlerCertificate, "employee_name"),
    "location_id": max_length(FoodHandlerCertificate, "location_id"),
    "location_name": max_length(FoodHandlerPacket, "location_name"),
    "job": max_length(FoodHandlerCertificate, "job"),
    "card_number": max_length(FoodHandlerCertificate, "card_number"),
    "issuer": max_length(FoodHandlerCertificate, "issuer"),
    "certificate_url": max_length(FoodHandlerCertificate, "source_url"),
}
MAX_ETAG = max_length(FoodHandlerCertificate, "source_etag")


def _kept_etag(etag: str) -> str:
    """An ETag too long for its column is not kept: the next run fetches in full."""
    return etag if len(etag) <= MAX_ETAG else ""


@dataclass(frozen=True)
class Card:
    number: str
    issuer: str
    issued_on: date | None
    expires_on: date
    url: str


@dataclass(frozen=True)
class FoodHandler:
    employee_id: str
    name: str
    location_id: str
    location_name: str
    job: str
    hire_date: date
    card: Card | None


@dataclass
class Certificate:
    """What we hold for one card after this run: the accepted PDF (if any) and the source's
    ETag of the version last fetched; ``refused`` is why this run's fetch was not accepted."""

    document: str = ""
    content_hash: str = ""
    source_url: str = ""
    source_etag: str = ""
    refused: str = ""


@dataclass
class LocationOutcome:
    counts: dict[str, int]
    failed: dict[str, str] = field(default_factory=dict)


@overload
def _date(value: Any, where: str, *, required: Literal[True] = ...) -> date: ...
@overload
def _date(value: Any, where: str, *, required: bool) -> date | None: ...
def _date(value: Any, where: str, *, required: bool = True) -> date | None:
    if value in (None, "") and not required:
        return None
    if not isinstance(value, str):
        raise MalformedData(f"{where}: {value!r} is not a date")
    try:
        parsed = date.fromisoformat(value)
    except ValueError as exc:
        raise MalformedData(f"{where}: {value!r} is not a date") from exc
    if not EARLIEST_DATE <= parsed <= LATEST_DATE:
        raise MalformedData(f"{where}: {value!r} is not a plausible date")
    return parsed


def _fits(value: str, key: str, where: str) -> str:
    if len(value) > MAX_LENGTHS[key]:
        raise MalformedData(f"{where}: {key} longer than {MAX_LENGTHS[key]} characters")
    return value


def _text(raw: dict, key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise MalformedData(f"{where}: {key} missing")
    return _fits(value.strip(), key, where)


def _optional_text(raw: dict, key: str, where: str) -> str:
    return _fits(str(raw.get(key) or ""), key, where)


def _certificate_url(raw: dict, where: str) -> str:
    """A URL both connectors can take: it parses, and holds no control character (a NUL,
    even percent-encoded, makes a file path raise)."""
    url = _text(raw, "certificate_url", where)
    try:
        urlparse(url)  # a bracketed host that is no IPv6 address raises
    except ValueError as exc:
        raise MalformedData(f"{where}: certificate_url is not a valid URL ({exc})") from exc
    if any(ord(char) < 32 or ord(char) == 127 for char in unquote(url)):
        raise MalformedData(f"{where}: certificate_url holds a control character")
    return url


def parse_card(raw: Any, where: str) -> Card | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise MalformedData(f"{where}: food_handler is not an object")
    return Card(
        number=_text(raw, "card_number", where),
        issuer=_optional_text(raw, "issuer", where),
        issued_on=_date(raw.get("issued_on"), f"{where} issued_on", required=False),
        expires_on=_date(raw.get("expires_on"), f"{where} expires_on"),
        url=_certificate_url(raw, where),
    )


def parse_employee(raw: Any, index: int) -> FoodHandler:
    """One roster record; MalformedData naming the record and the field."""
    if not isinstance(raw, dict):
        raise MalformedData(f"employee #{index}: not an object")
    where = f"employee {raw.get('employee_id') or '#' + str(index)}"
    return FoodHandler(
        employee_id=_text(raw, "employee_id", where),
        name=_text(raw, "name", where),
        location_id=_text(raw, "location_id", where),
        location_name=_optional_text(raw, "location_name", where),
        job=_optional_text(raw, "job", where),
        hire_date=_date(raw.get("hire_date"), f"{where} hire_date"),
        card=parse_card(raw.get("food_handler"), where),
    )


def card_status(handler: FoodHandler, on_file: bool, as_of: date) -> str:
    """The rule of the module docstring, for one food handler."""
    if handler.card is not None and on_file:
        if handler.card.expires_on < as_of:
            return FoodHandlerStatus.EXPIRED.value
        if handler.card.expires_on <= as_of + EXPIRING_WITHIN:
            return FoodHandlerStatus.EXPIRING.value
        return FoodHandlerStatus.VALID.value
    if handler.hire_date + GRACE < as_of:
        return FoodHandlerStatus.OVERDUE.value
    return FoodHandlerStatus.MISSING.value


def read_roster(
    task: TaskHandle, source: Connector
) -> tuple[dict[str, list[FoodHandler]], set[str]]:
    """Food handlers by location, and the ids of malformed records (reported, left alone)."""
    try:
        employees = source.list_employees()
    except SourceError as exc:
        raise JobFailed(f"roster source unusable: {exc}") from exc
    if not employees:
        raise JobFailed("the roster lists no employees")
    by_location: dict[str, list[FoodHandler]] = {}
    malformed: set[str] = set()
    for index, raw in enumerate(employees):
        location_id = raw.get("location_id") if isinstance(raw, dict) else None
        if isinstance(location_id, str) and len(location_id) <= MAX_LENGTHS["location_id"]:
            by_location.setdefault(location_id, [])
        if not isinstance(raw, dict) or raw.get("handles_food") is not True:
            continue
        try:
            handler = parse_employee(raw, index)
        except MalformedData as exc:
            malformed.add(str(raw.get("employee_id") or ""))
            task.error(f"malformed roster record: {exc}")
            continue
        by_location.setdefault(handler.location_id, []).append(handler)
    return by_location, malformed


def fetch_certificate(
    source: Connector, handler: FoodHandler, stored: FoodHandlerCertificate | None
) -> Certificate:
    """This run's certificate for the handler's card: fetched only when it changed, stored
    by hash when it is a readable PDF, else refused (an earlier accepted PDF of the same
    card number stays on file)."""
    card = handler.card
    assert card is not None
    # The stored row, when it is of this card.
    same_card = stored if stored is not None and stored.card_number == card.number else None
    kept = Certificate()
    if same_card is not None and same_card.document and documents.exists(same_card.document):
        kept = Certificate(
            same_card.document, same_card.content_hash, same_card.source_url, same_card.source_etag
        )
    # The stored ETag names what we hold: an accepted PDF still in storage, or a refused one.
    etag = ""
    if (
        same_card is not None
        and same_card.source_url == card.url
        and (kept.document or not same_card.document)
    ):
        etag = same_card.source_etag
    try:
        fetched = source.fetch_document(card.url, etag=etag)
    except (SourceError, ValueError) as exc:  # ValueError: a URL or path the source cannot use
        reason = (
            "not found at the source"
            if isinstance(exc, DataNotFound)
            else f"could not be fetched: {exc}"
        )
        return Certificate(
            kept.document, kept.content_hash, kept.source_url, kept.source_etag, refused=reason
        )
    content = fetched.content
    if content is None:  # not modified since ``etag``
        if kept.document:
            return Certificate(kept.document, kept.content_hash, card.url, etag)
        # The version we refused last time, still the same: refused again, not downloaded.
        return Certificate(
            source_url=card.url,
            source_etag=etag,
            refused="unchanged at the source since it was refused",
        )
    try:
        pdfs.check_pdf(content)
    except pdfs.InvalidPdf as exc:
        if kept.document:  # keep the accepted PDF, and fetch again next time
            return Certificate(
                kept.document,
                kept.content_hash,
                kept.source_url,
                kept.source_etag,
                refused=str(exc),
            )
        return Certificate(
            source_url=card.url, source_etag=_kept_etag(fetched.etag), refused=str(exc)
        )
    name, digest = documents.store("certificates", content)
    return Certificate(name, digest, card.url, _kept_etag(fetched.etag))


def build_location_packet(
    location_id: str,
    location_name: str,
    as_of: date,
    handlers: list[FoodHandler],
    rows: dict[str, FoodHandlerCertificate],
    counts: dict[str, int],
) -> tuple[str, str]:
    """Cover page and every current certificate, stored by hash; (storage name, hash)."""
    ordered = sorted(handlers, key=lambda h: (h.name.lower(), h.employee_id))
    cover_rows = []
    certificates = []
    for handler in ordered:
        row = rows[handler.employee_id]
        cover_rows.append(
            pdfs.CoverRow(
                employee=f"{handler.name} ({handler.employee_id})",
                job=handler.job,
                card_number=row.card_number,
                expires_on=row.expires_on,
                status=row.status,
            )
        )
        if row.status in CURRENT:
            certificates.append(documents.read(row.document))
    cover = pdfs.cover_page(
        location_id=location_id,
        location_name=location_name,
        as_of=as_of,
        rows=cover_rows,
        counts=counts,
    )
    return documents.store("packets", pdfs.build_packet(cover, certificates))


def check_location(
    task: TaskHandle,
    source: Connector,
    location_id: str,
    handlers: list[FoodHandler],
    keep: set[str],
    as_of: date,
) -> LocationOutcome:
    """Fetch, judge and store one location's certificates, then its rows and packet."""
    stored = {
        row.employee_id: row
        for row in FoodHandlerCertificate.objects.filter(
            employee_id__in=[h.employee_id for h in handlers]
        )
    }
    outcome = LocationOutcome(counts=dict.fromkeys(STATUSES, 0))
    rows: dict[str, FoodHandlerCertificate] = {}
    for handler in handlers:
        card = handler.card
        held = Certificate()
        if card is not None:
            held = fetch_certificate(source, handler, stored.get(handler.employee_id))
            if held.refused:
                outcome.failed[handler.employee_id] = held.refused
                task.error(
                    f"{handler.employee_id} {handler.name}: certificate {card.number} "
                    f"refused: {held.refused}"
                )
        status = card_status(handler, bool(held.document), as_of)
        outcome.counts[status] += 1
        rows[handler.employee_id] = FoodHandlerCertificate(
            employee_id=handler.employee_id,
            employee_name=handler.name,
            location_id=location_id,
            job=handler.job,
            hire_date=handler.hire_date,
            card_number=card.number if card else "",
            issuer=card.issuer if card else "",
            issued_on=card.issued_on if card else None,
            expires_on=card.expires_on if card else None,
            status=status,
            document=held.document,
            content_hash=held.content_hash,
            source_url=held.source_url,
            source_etag=held.source_etag,
            as_of=as_of,
            task_id=task.task_id,
        )
    location_name = next((h.location_name for h in handlers if h.location_name), "")
    packet, digest = build_location_packet(
        location_id, location_name, as_of, handlers, rows, outcome.counts
    )
    save_location(
        location_id,
        location_name,
        as_of,
        list(rows.values()),
        keep,
        packet,
        digest,
        outcome.counts,
        task.task_id,
    )
    return outcome


def save_location(
    location_id: str,
    location_name: str,
    as_of: date,
    rows: list[FoodHandlerCertificate],
    keep: set[str],
    packet: str,
    digest: str,
    counts: dict[str, int],
    task_id: str,
) -> None:
    """One transaction per location: upsert the employees (a concurrent run cannot make us
    fail), remove those no longer on its roster, record the packet."""
    update = [
        f.name
        for f in FoodHandlerCertificate._meta.concrete_fields
        if f.name not in ("id", "employee_id")
    ]
    with transaction.atomic():
        FoodHandlerCertificate.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["employee_id"], update_fields=update
        )
        (
            FoodHandlerCertificate.objects.filter(location_id=location_id)
            .exclude(employee_id__in=[r.employee_id for r in rows] + sorted(keep))
            .delete()
        )
        FoodHandlerPacket.objects.update_or_create(
            location_id=location_id,
            defaults={
                "location_name": location_name,
                "document": packet,
                "content_hash": digest,
                "counts": counts,
                "as_of": as_of,
                "task_id": task_id,
            },
        )


def run(task: TaskHandle, params: dict[str, Any]) -> dict[str, Any]:
    """Check every requested location's food handlers; a bad certificate is an error."""
    as_of: date = params["as_of"]
    source = roster_source()
    by_location, malformed = read_roster(task, source)
    wanted = list(params.get("locations") or sorted(by_location))
    unknown = [loc for loc in wanted if loc not in by_location]
    if unknown:
        raise JobFailed(f"unknown location(s): {', '.join(unknown)}")
    total = len(wanted)
    task.progress(0, f"as of {as_of.isoformat()}: 0 of {total} locations", total=total)
    counts: dict[str, dict[str, int]] = {}
    failed: dict[str, str] = {}
    for i, location_id in enumerate(wanted, 1):
        outcome = check_location(
            task, source, location_id, by_location[location_id], malformed, as_of
        )
        counts[location_id] = outcome.counts
        failed.update(outcome.failed)
        task.progress(i, f"as of {as_of.isoformat()}: location {location_id} ({i} of {total})")
    totals = {status: sum(c[status] for c in counts.values()) for status in STATUSES}
    return {
        "as_of": as_of.isoformat(),
        "checked": wanted,
        "locations": counts,
        "totals": totals,
        "food_handlers": sum(totals.values()),
        "failed": dict(sorted(failed.items())),
    }
