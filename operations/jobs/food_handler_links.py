"""get_food_handler_links: signed, expiring download links to what update_food_handler_pdfs
stored, with each card's status beside them.

Reads only our own rows (``FoodHandlerCertificate``, ``FoodHandlerPacket``), never the
roster source: the links show what was last checked, and making them cannot fail
because a provider is down. Each link is a ``/documents/<token>`` path that expires
after ``DOCUMENT_LINK_SECONDS`` (``operations.documents``); the result is the task's
result, so only those who may see this operation's tasks see the links at all.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from tasks.tracker import TaskHandle

from .. import documents
from ..models import FoodHandlerCertificate, FoodHandlerPacket
from . import JobFailed


def locations_on_file() -> list[str]:
    certificates = FoodHandlerCertificate.objects.values_list("location_id", flat=True)
    packets = FoodHandlerPacket.objects.values_list("location_id", flat=True)
    return sorted(set(certificates) | set(packets))


def location_links(location_id: str) -> dict[str, Any]:
    """One location's packet link and one line per food handler (a link when a PDF is on
    file for the current card)."""
    packet = FoodHandlerPacket.objects.filter(location_id=location_id).first()
    packet_link = None
    if packet is not None and packet.document:
        filename = documents.download_filename(f"food-handler-packet-{location_id}")
        packet_link = {"url": documents.link_path(packet.document, filename), "filename": filename}
    employees = []
    for row in FoodHandlerCertificate.objects.filter(location_id=location_id).order_by(
        "employee_id"
    ):
        url = (
            documents.link_path(
                row.document,
                documents.download_filename(f"food-handler-{row.employee_id}"),
                row.employee_id,
            )
            if row.document
            else None
        )
        employees.append(
            {
                "employee_id": row.employee_id,
                "name": row.employee_name,
                "job": row.job,
                "status": row.status,
                "expires_on": row.expires_on.isoformat() if row.expires_on else None,
                "url": url,
            }
        )
    return {"location_id": location_id, "packet": packet_link, "employees": employees}


def run(task: TaskHandle, params: dict[str, Any]) -> dict[str, Any]:
    """Links for the requested locations (default: every location with records on file)."""
    on_file = locations_on_file()
    if not on_file:
        raise JobFailed("no food handler records yet; run update_food_handler_pdfs first")
    wanted = list(params.get("locations") or on_file)
    unknown = [loc for loc in wanted if loc not in on_file]
    if unknown:
        raise JobFailed(
            f"unknown location(s): {', '.join(unknown)} (no food handler records on file)"
        )
    # Before signing: a link made below expires at this instant or a moment later.
    expires_at = int(time.time()) + settings.DOCUMENT_LINK_SECONDS
    total = len(wanted)
    task.progress(0, f"0 of {total} locations", total=total)
    out = []
    for i, location_id in enumerate(wanted, 1):
        out.append(location_links(location_id))
        task.progress(i, f"location {location_id} ({i} of {total})")
    return {"expires_at": expires_at, "locations": out}
