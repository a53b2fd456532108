"""Personal data leaves with the person: how long food handler documents outlive their use.

An employee who leaves the roster (or stops handling food) loses their row at once
and gets a ``FoodHandlerDeparture`` naming the certificate we held. A packet that
stops being its location's current one (replaced, its location gone) or that was
made as a report becomes a ``FoodHandlerArchivedPacket``. Both are kept
``FOOD_HANDLER_RETENTION_DAYS``, long enough to answer an inspector or a claim
about a recent shift and to take back a seasonal worker, and then deleted from
document storage unless a current record or a current packet still names the same
file. ``update_food_handler_pdfs`` sweeps on each run as of today (the daily
schedule), so nothing outlives its retention by more than a day.

A link to a departed person's certificate answers 410 once the retention has
passed, whether or not the file is still in storage; the departure is forgotten
when no link signed before the purge can still be valid.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from . import documents
from .models import (
    FoodHandlerArchivedPacket,
    FoodHandlerCertificate,
    FoodHandlerDeparture,
    FoodHandlerPacket,
)


def cutoff(now: datetime | None = None) -> datetime:
    """What departed or was archived at or before this instant is past its retention."""
    return (now or timezone.now()) - timedelta(days=settings.FOOD_HANDLER_RETENTION_DAYS)


def record_departures(rows: QuerySet[FoodHandlerCertificate]) -> int:
    """Delete ``rows`` (people who left), noting each with the certificate we held."""
    gone = list(rows.values_list("employee_id", "location_id", "document"))
    if not gone:
        return 0
    now = timezone.now()
    FoodHandlerDeparture.objects.bulk_create(
        [
            FoodHandlerDeparture(
                employee_id=emp_id, location_id=location_id, document=document, departed_at=now
            )
            for emp_id, location_id, document in gone
        ],
        update_conflicts=True,
        unique_fields=["employee_id"],
        update_fields=["location_id", "document", "departed_at", "purged_at"],
    )
    FoodHandlerCertificate.objects.filter(employee_id__in=[g[0] for g in gone]).delete()
    return len(gone)


def archive_packet(packet: FoodHandlerPacket) -> None:
    """Keep a packet that is no longer current for the retention period."""
    FoodHandlerArchivedPacket.objects.create(
        kind=FoodHandlerArchivedPacket.Kind.SUPERSEDED,
        location_id=packet.location_id,
        location_name=packet.location_name,
        document=packet.document,
        content_hash=packet.content_hash,
        counts=packet.counts,
        as_of=packet.as_of,
        task_id=packet.task_id,
    )


def departed_past_retention(employee_id: str) -> bool:
    """Whether ``employee_id`` left the roster longer than the retention period ago."""
    return FoodHandlerDeparture.objects.filter(
        employee_id=employee_id, departed_at__lte=cutoff()
    ).exists()


def sweep(now: datetime | None = None) -> dict[str, int]:
    """Delete what is past its retention; the counts of what went."""
    now = now or timezone.now()
    before = cutoff(now)
    in_use = set(FoodHandlerCertificate.objects.values_list("document", flat=True))
    certificates = 0
    for departure in FoodHandlerDeparture.objects.filter(
        departed_at__lte=before, purged_at__isnull=True
    ):
        if departure.document and departure.document not in in_use:
            documents.delete(departure.document)
            certificates += 1
        departure.purged_at = now
        departure.save(update_fields=["purged_at"])
    # No link made before the purge is still valid: nothing left to answer 410 for.
    links_end = now - timedelta(seconds=settings.DOCUMENT_LINK_SECONDS)
    FoodHandlerDeparture.objects.filter(purged_at__lte=links_end).delete()

    expired = FoodHandlerArchivedPacket.objects.filter(archived_at__lte=before)
    kept = set(FoodHandlerPacket.objects.values_list("document", flat=True)) | set(
        FoodHandlerArchivedPacket.objects.filter(archived_at__gt=before).values_list(
            "document", flat=True
        )
    )
    packets = 0
    for name in set(expired.values_list("document", flat=True)) - kept:
        documents.delete(name)
        packets += 1
    expired.delete()
    return {"certificates_deleted": certificates, "packets_deleted": packets}
