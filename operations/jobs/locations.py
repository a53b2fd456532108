"""What the location-day jobs share: which locations, one progress step each, how they fail.

A location whose data is missing or unreadable is an ``error`` and the job goes
on; only a day where no location could be done fails the task.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.utils import timezone

from tasks.tracker import TaskHandle

from ..sources import Connector, DataNotFound, SourceError
from . import JobFailed

T = TypeVar("T")


class MalformedData(ValueError):
    """A record that cannot be read; the message names the record and the field."""


def location_zone(location: dict) -> ZoneInfo:
    try:
        return ZoneInfo(location.get("timezone") or settings.TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(settings.TIME_ZONE)


def each_location(
    task: TaskHandle,
    source: Connector,
    params: dict[str, Any],
    step: Callable[[date, dict, ZoneInfo], T],
    *,
    data: str,
    verb: str,
) -> tuple[dict[str, T], dict[str, str]]:
    """Run ``step`` for each requested location; returns (done by id, failed by id).

    ``data`` names the source in messages ("no sales data for ..."), ``verb``
    what a step does ("no location could be summarised").
    """
    business_date: date = params["business_date"]
    if business_date > timezone.localdate():
        raise JobFailed(f"business date {business_date.isoformat()} is in the future")
    try:
        known = {str(loc["id"]): loc for loc in source.list_locations() if isinstance(loc, dict)}
    except (SourceError, KeyError) as exc:
        raise JobFailed(f"{data} source unusable: {exc}") from exc
    wanted = list(params.get("locations") or sorted(known))
    unknown = [loc for loc in wanted if loc not in known]
    if unknown:
        raise JobFailed(f"unknown location(s): {', '.join(unknown)}")
    total = len(wanted)
    task.progress(0, f"{business_date.isoformat()}: 0 of {total} locations", total=total)
    done: dict[str, T] = {}
    failed: dict[str, str] = {}
    missing = 0
    for i, loc_id in enumerate(wanted, 1):
        location = known[loc_id]
        try:
            done[loc_id] = step(business_date, location, location_zone(location))
        except DataNotFound as exc:
            missing += 1
            failed[loc_id] = f"missing data: {exc}"
            task.error(f"location {loc_id}: missing data: {exc}")
        except (SourceError, MalformedData) as exc:
            failed[loc_id] = f"malformed data: {exc}"
            task.error(f"location {loc_id}: malformed data: {exc}")
        task.progress(i, f"{business_date.isoformat()}: location {loc_id} ({i} of {total})")
    if not done:
        if missing == total:
            where = f" at {', '.join(sorted(failed))}" if len(failed) <= 3 else ""
            raise JobFailed(f"no {data} data for {business_date.isoformat()}{where}")
        first = "; ".join(f"{k}: {v}" for k, v in list(failed.items())[:3])
        raise JobFailed(f"no location could be {verb} ({first})")
    return done, failed
