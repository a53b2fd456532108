"""The tip pool policy: which jobs share each location's tips, and their points.

The policy is a committed JSON file (``TIP_POLICY_FILE``), reviewed like code::

    {"note": "...", "policies": {"L01": {"jobs": {"Server": "10", "Busser": "5"}}, ...}}

Points are decimal strings (a number is accepted too) and must be positive; a
job that is not listed gets nothing. Managers and supervisors never share in a
tip pool (California Labor Code 351), so a location whose policy lists a job
named like one (containing "Manager" or "Supervisor", or "Shift Lead") is
refused as a whole: paying the rest by a policy someone got wrong is worse than
paying that location a day later.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings

from .numbers import finite_decimal

MAX_POINTS = Decimal("1000")


class PolicyFileError(Exception):
    """The policy file itself cannot be used (missing, not JSON, no ``policies`` object)."""


@dataclass(frozen=True)
class LocationPolicy:
    """One location's points per job."""

    location_id: str
    points: dict[str, Decimal]

    def points_for(self, job: str) -> Decimal:
        return self.points.get(job, Decimal(0))


def is_manager_job(job: str) -> bool:
    """Labor Code 351: agents of the employer (managers, supervisors) take no tips."""
    name = re.sub(r"\s+", " ", job).strip().casefold()
    return "manager" in name or "supervisor" in name or name == "shift lead"


def _points(value: Any, job: str) -> Decimal:
    points = finite_decimal(value)
    if points is None:
        raise ValueError(f"job {job!r}: points {value!r} are not a number")
    if not Decimal(0) < points <= MAX_POINTS:
        raise ValueError(f"job {job!r}: points {value!r} are not between 0 and {MAX_POINTS}")
    return points


def parse_location(location_id: str, raw: Any) -> LocationPolicy:
    """One location's policy; ValueError naming the first problem (a manager job first)."""
    jobs = raw.get("jobs") if isinstance(raw, dict) else None
    if not isinstance(jobs, dict) or not jobs:
        raise ValueError("the policy has no 'jobs' object")
    managers = sorted(job for job in jobs if is_manager_job(str(job)))
    if managers:
        raise ValueError(
            f"the policy lists {', '.join(repr(j) for j in managers)}: managers "
            "and supervisors never share tips (California Labor Code 351)"
        )
    return LocationPolicy(
        location_id, {str(job): _points(value, str(job)) for job, value in jobs.items()}
    )


def load_policies(
    path: Path | str | None = None,
) -> tuple[dict[str, LocationPolicy], dict[str, str]]:
    """(usable policies by location, refused locations -> reason) from ``TIP_POLICY_FILE``."""
    path = Path(path or settings.TIP_POLICY_FILE)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PolicyFileError(f"tip policy file {path.name} not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyFileError(f"tip policy file {path.name} is unreadable ({exc})") from exc
    policies = data.get("policies") if isinstance(data, dict) else None
    if not isinstance(policies, dict):
        raise PolicyFileError(f"tip policy file {path.name} has no 'policies' object")
    usable: dict[str, LocationPolicy] = {}
    refused: dict[str, str] = {}
    for location_id, raw in policies.items():
        try:
            usable[str(location_id)] = parse_location(str(location_id), raw)
        except ValueError as exc:
            refused[str(location_id)] = str(exc)
    return usable, refused
