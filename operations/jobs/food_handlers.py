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
bounded, readable PDF with something drawn on its first page (``operations.pdfs``)
is an ``error`` naming the employee and the job goes on; so is a roster record our
columns cannot hold (``food_handler_roster``). Accepted files are stored by content
hash (``operations.documents``). Per location, the employees' rows are replaced in
one transaction and the compliance packet (cover page and every current
certificate, re-checked) is rebuilt; identical input gives an identical packet, so
a re-run with nothing changed stores nothing.

Only today (in TIME_ZONE, the default) changes the record. A past ``as_of`` is a
report: the same reading and checks, a packet of its own recorded as a report of
that date, and no stored status, ETag, certificate or current packet changed. A
future ``as_of`` is refused: nobody's card can be judged on a day not yet come.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from tasks.tracker import TaskHandle

from .. import documents, food_handler_retention, pdfs
from ..models import (
    FoodHandlerArchivedPacket,
    FoodHandlerCertificate,
    FoodHandlerDeparture,
    FoodHandlerPacket,
    FoodHandlerStatus,
)
from ..sources import Connector, DataNotFound, SourceError, roster_source
from . import JobFailed
from .columns import max_length
from .food_handler_roster import Card, FoodHandler, read_roster, storable

__all__ = ["Card", "FoodHandler", "card_status", "fetch_certificate", "run"]

GRACE = timedelta(days=30)
EXPIRING_WITHIN = timedelta(days=30)
STATUSES = [status.value for status in FoodHandlerStatus]
CURRENT = (FoodHandlerStatus.VALID.value, FoodHandlerStatus.EXPIRING.value)
MAX_ETAG = max_length(FoodHandlerCertificate, "source_etag")


def _kept_etag(etag: str) -> str:
    """An ETag our column cannot hold is not kept: the next run fetches in full."""
    return etag if len(etag) <= MAX_ETAG and storable(etag) else ""


@dataclass
class Certificate:
    """What we hold for one card after this run: the accepted PDF (if any) and the source's
    ETag of the version last fetched; ``refused`` is why this run's fetch was not accepted;
    ``checked`` the re-write of a PDF this run downloaded and accepted."""

    document: str = ""
    content_hash: str = ""
    source_url: str = ""
    source_etag: str = ""
    refused: str = ""
    checked: pdfs.CheckedPdf | None = None


@dataclass
class LocationOutcome:
    counts: dict[str, int]
    failed: dict[str, str] = field(default_factory=dict)
    packet: str = ""


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


def fetch_certificate(
    source: Connector,
    handler: FoodHandler,
    stored: FoodHandlerCertificate | None,
    *,
    store: bool = True,
) -> Certificate:
    """This run's certificate for the handler's card: fetched only when it changed, checked,
    stored by hash when accepted (unless ``store`` is off: a report), else refused (an
    earlier accepted PDF of the same card number stays on file)."""
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
        checked = pdfs.check_pdf(content)
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
    if store:
        name, digest = documents.store("certificates", content)
    else:
        digest = documents.sha256(content)
        name = documents.name_for("certificates", digest)
    return Certificate(name, digest, card.url, _kept_etag(fetched.etag), checked=checked)


def packet_certificates(
    task: TaskHandle,
    ordered: list[FoodHandler],
    rows: dict[str, FoodHandlerCertificate],
    checked: dict[str, pdfs.CheckedPdf],
    failed: dict[str, str],
) -> list[pdfs.CheckedPdf]:
    """Every current certificate, in the cover's order, as checked: this run's check of a
    new download, else the stored file checked again (it may predate the limits). One that
    fails now is left out of the packet, an error naming the employee."""
    out = []
    for handler in ordered:
        row = rows[handler.employee_id]
        if row.status not in CURRENT:
            continue
        certificate = checked.get(handler.employee_id)
        if certificate is None:
            try:
                certificate = pdfs.check_pdf(documents.read(row.document))
            except (pdfs.InvalidPdf, documents.DocumentGone) as exc:
                reason = str(exc) if isinstance(exc, pdfs.InvalidPdf) else "gone from storage"
                failed[handler.employee_id] = f"left out of the packet: {reason}"
                task.error(
                    f"{handler.employee_id} {handler.name}: certificate {row.card_number} "
                    f"left out of the packet: {reason}"
                )
                continue
        out.append(certificate)
    return out


def build_location_packet(
    task: TaskHandle,
    location_id: str,
    location_name: str,
    as_of: date,
    handlers: list[FoodHandler],
    rows: dict[str, FoodHandlerCertificate],
    outcome: LocationOutcome,
    checked: dict[str, pdfs.CheckedPdf],
    *,
    report: bool,
) -> tuple[str, str]:
    """Cover page and every current certificate, stored by hash; (storage name, hash)."""
    ordered = sorted(handlers, key=lambda h: (h.name.lower(), h.employee_id))
    cover_rows = [
        pdfs.CoverRow(
            employee=f"{handler.name} ({handler.employee_id})",
            job=handler.job,
            card_number=rows[handler.employee_id].card_number,
            expires_on=rows[handler.employee_id].expires_on,
            status=rows[handler.employee_id].status,
        )
        for handler in ordered
    ]
    certificates = packet_certificates(task, ordered, rows, checked, outcome.failed)
    cover = pdfs.cover_page(
        location_id=location_id,
        location_name=location_name,
        as_of=as_of,
        rows=cover_rows,
        counts=outcome.counts,
        report=report,
    )
    return documents.store("packets", pdfs.build_packet(cover, certificates))


def check_location(
    task: TaskHandle,
    source: Connector,
    location_id: str,
    handlers: list[FoodHandler],
    keep: set[str],
    as_of: date,
    *,
    report: bool = False,
) -> LocationOutcome:
    """Fetch, judge and store one location's certificates, then its rows and packet (a
    report: its packet only, recorded as of its date)."""
    stored = {
        row.employee_id: row
        for row in FoodHandlerCertificate.objects.filter(
            employee_id__in=[h.employee_id for h in handlers]
        )
    }
    outcome = LocationOutcome(counts=dict.fromkeys(STATUSES, 0))
    rows: dict[str, FoodHandlerCertificate] = {}
    checked: dict[str, pdfs.CheckedPdf] = {}
    for handler in handlers:
        card = handler.card
        held = Certificate()
        if card is not None:
            held = fetch_certificate(
                source, handler, stored.get(handler.employee_id), store=not report
            )
            if held.checked is not None:
                checked[handler.employee_id] = held.checked
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
        task, location_id, location_name, as_of, handlers, rows, outcome, checked, report=report
    )
    outcome.packet = packet
    record = {
        "location_id": location_id,
        "location_name": location_name,
        "document": packet,
        "content_hash": digest,
        "counts": outcome.counts,
        "as_of": as_of,
        "task_id": task.task_id,
    }
    if report:
        FoodHandlerArchivedPacket.objects.create(
            kind=FoodHandlerArchivedPacket.Kind.REPORT, **record
        )
    else:
        save_location(record, list(rows.values()), keep)
    return outcome


def save_location(
    packet: dict[str, Any], rows: list[FoodHandlerCertificate], keep: set[str]
) -> None:
    """One transaction per location: upsert the employees (a concurrent run cannot make us
    fail), note who left (their certificate is kept FOOD_HANDLER_RETENTION_DAYS), record
    the packet and keep the one it replaces as an archived packet."""
    location_id = packet["location_id"]
    update = [
        f.name
        for f in FoodHandlerCertificate._meta.concrete_fields
        if f.name not in ("id", "employee_id")
    ]
    present = [r.employee_id for r in rows]
    with transaction.atomic():
        FoodHandlerCertificate.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["employee_id"], update_fields=update
        )
        FoodHandlerDeparture.objects.filter(employee_id__in=present).delete()  # back again
        gone = FoodHandlerCertificate.objects.filter(location_id=location_id).exclude(
            employee_id__in=present + sorted(keep)
        )
        food_handler_retention.record_departures(gone)
        previous = FoodHandlerPacket.objects.filter(location_id=location_id).first()
        if previous is not None and previous.document != packet["document"]:
            food_handler_retention.archive_packet(previous)
        FoodHandlerPacket.objects.update_or_create(
            location_id=location_id,
            defaults={k: v for k, v in packet.items() if k != "location_id"},
        )


def retire_locations(on_roster: set[str]) -> int:
    """A full run: the locations on file that the roster no longer has (closed, renamed)
    lose their food handlers, who have left, and their packet, archived. How many left."""
    with transaction.atomic():
        gone = FoodHandlerCertificate.objects.exclude(location_id__in=sorted(on_roster))
        left = food_handler_retention.record_departures(gone)
        for packet in FoodHandlerPacket.objects.exclude(location_id__in=sorted(on_roster)):
            food_handler_retention.archive_packet(packet)
            packet.delete()
    return left


def report_links(packets: dict[str, str], as_of: date) -> dict[str, dict[str, str]]:
    """Signed links to a report's packets, named for the location and the date."""
    out = {}
    for location_id, name in packets.items():
        filename = documents.download_filename(
            f"food-handler-packet-{location_id}-as-of-{as_of.isoformat()}"
        )
        out[location_id] = {"url": documents.link_path(name, filename), "filename": filename}
    return out


def run(task: TaskHandle, params: dict[str, Any]) -> dict[str, Any]:
    """Check every requested location's food handlers; a bad certificate is an error. As of
    a past date: a report that changes nothing on file."""
    today = timezone.localdate()
    as_of: date = params.get("as_of") or today
    if as_of > today:
        raise JobFailed(
            f"as_of {as_of.isoformat()} is in the future (today is {today.isoformat()}): "
            "a card's status is known up to today"
        )
    report = as_of < today
    source = roster_source()
    by_location, malformed = read_roster(task, source)
    wanted = list(params.get("locations") or sorted(by_location))
    unknown = [loc for loc in wanted if loc not in by_location]
    if unknown:
        raise JobFailed(f"unknown location(s): {', '.join(unknown)}")
    total = len(wanted)
    label = f"report as of {as_of.isoformat()}" if report else f"as of {as_of.isoformat()}"
    task.progress(0, f"{label}: 0 of {total} locations", total=total)
    counts: dict[str, dict[str, int]] = {}
    failed: dict[str, str] = {}
    packets: dict[str, str] = {}
    for i, location_id in enumerate(wanted, 1):
        outcome = check_location(
            task, source, location_id, by_location[location_id], malformed, as_of, report=report
        )
        counts[location_id] = outcome.counts
        failed.update(outcome.failed)
        packets[location_id] = outcome.packet
        task.progress(i, f"{label}: location {location_id} ({i} of {total})")
    totals = {status: sum(c[status] for c in counts.values()) for status in STATUSES}
    result: dict[str, Any] = {
        "as_of": as_of.isoformat(),
        "report": report,
        "checked": wanted,
        "locations": counts,
        "totals": totals,
        "food_handlers": sum(totals.values()),
        "failed": dict(sorted(failed.items())),
    }
    if report:
        result["packets"] = report_links(packets, as_of)
        return result
    if not params.get("locations"):
        retire_locations(set(by_location))
    result["retention"] = food_handler_retention.sweep()
    return result
