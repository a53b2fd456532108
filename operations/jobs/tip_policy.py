"""The tip pool policy: which jobs share each location's tips, their points, the pay
periods, and which job titles are managers.

The policy is a committed JSON file (``TIP_POLICY_FILE``), reviewed like code::

    {"note": "...",
     "pay_period": {"kind": "weekly", "first_day": "monday"},
     "manager_titles": ["manager", "supervisor", "shift lead", "gm", ...],
     "policies": {"L01": {"jobs": {"Server": "10", "Busser": "5"}}, ...}}

Points are decimal strings (a number is accepted too) and must be positive; a
job that is not listed gets nothing. Managers and supervisors never share in a
tip pool (California Labor Code 351), so a location whose policy lists a job
whose title holds one of the manager titles (as whole words, whatever the case,
spacing or hyphens: "Shift-Lead" is "shift lead") is refused as a whole: paying
the rest by a policy someone got wrong is worse than paying that location a day
later. Without ``manager_titles`` the file gets ``DEFAULT_MANAGER_TITLES``.

Pay periods (what ``email_tips`` states, one statement per employee and period):
``weekly`` (seven days from ``first_day``, default Monday), ``biweekly``
(fourteen days from the date ``anchor``) or ``semimonthly`` (the 1st to the 15th,
the 16th to the month's end). Without ``pay_period``: weekly from Monday.
"""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings

from .numbers import finite_decimal

MAX_POINTS = Decimal("1000")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Titles of agents of the employer, as whole words after folding case, hyphens and
# dots: "GM", "A.G.M.", "Shift-Lead" and "Kitchen Manager" all match.
DEFAULT_MANAGER_TITLES = (
    "manager",
    "mgr",
    "supervisor",
    "director",
    "shift lead",
    "shift leader",
    "shiftlead",
    "gm",
    "agm",
    "dm",
    "owner",
)


class PolicyFileError(Exception):
    """The policy file itself cannot be used (missing, not JSON, no ``policies`` object)."""


@dataclass(frozen=True)
class LocationPolicy:
    """One location's points per job."""

    location_id: str
    points: dict[str, Decimal]

    def points_for(self, job: str) -> Decimal:
        return self.points.get(job, Decimal(0))


@dataclass(frozen=True)
class PayPeriods:
    """How the group's pay periods fall: every business date is in exactly one."""

    kind: str = "weekly"
    first_weekday: int = 0
    anchor: date = date(2000, 1, 3)  # a Monday: biweekly periods count from it

    def containing(self, day: date) -> tuple[date, date]:
        if self.kind == "semimonthly":
            if day.day <= 15:
                return day.replace(day=1), day.replace(day=15)
            last = calendar.monthrange(day.year, day.month)[1]
            return day.replace(day=16), day.replace(day=last)
        if self.kind == "biweekly":
            start = day - timedelta(days=(day - self.anchor).days % 14)
            return start, start + timedelta(days=13)
        start = day - timedelta(days=(day.weekday() - self.first_weekday) % 7)
        return start, start + timedelta(days=6)

    def is_period(self, start: date, end: date) -> bool:
        return self.containing(start) == (start, end)

    def last_complete(self, today: date) -> tuple[date, date]:
        """The latest period that ended before ``today``."""
        return self.containing(self.containing(today)[0] - timedelta(days=1))

    def describe(self) -> str:
        if self.kind == "weekly":
            return f"weekly pay periods starting on {WEEKDAYS[self.first_weekday].title()}"
        if self.kind == "biweekly":
            return f"two-week pay periods counted from {self.anchor.isoformat()}"
        return "semimonthly pay periods (1st-15th, 16th-end of month)"


@dataclass(frozen=True)
class TipPolicies:
    """The whole file: usable policies, refused locations, pay periods, manager titles."""

    usable: dict[str, LocationPolicy]
    refused: dict[str, str]
    pay_periods: PayPeriods
    manager_titles: tuple[str, ...]


def _words(text: str) -> str:
    """Case, hyphens, dots and spacing folded: "A.G.M." -> "agm", "Shift-Lead" -> "shift lead"."""
    text = re.sub(r"(?<=\w)\.(?=\w)", "", text.casefold()).replace(".", "")
    return " ".join(re.findall(r"[^\W_]+", text))


def manager_title_in(job: str, titles: tuple[str, ...] = DEFAULT_MANAGER_TITLES) -> str | None:
    """The manager title ``job`` holds as whole words, if any (Labor Code 351)."""
    words = f" {_words(job)} "
    for title in titles:
        folded = _words(title)
        if folded and f" {folded} " in words:
            return title
    return None


def _points(value: Any, job: str) -> Decimal:
    points = finite_decimal(value)
    if points is None:
        raise ValueError(f"job {job!r}: points {value!r} are not a number")
    if not Decimal(0) < points <= MAX_POINTS:
        raise ValueError(f"job {job!r}: points {value!r} are not between 0 and {MAX_POINTS}")
    return points


def parse_location(
    location_id: str, raw: Any, titles: tuple[str, ...] = DEFAULT_MANAGER_TITLES
) -> LocationPolicy:
    """One location's policy; ValueError naming the first problem (a manager job first)."""
    jobs = raw.get("jobs") if isinstance(raw, dict) else None
    if not isinstance(jobs, dict) or not jobs:
        raise ValueError("the policy has no 'jobs' object")
    managers = sorted(job for job in jobs if manager_title_in(str(job), titles))
    if managers:
        raise ValueError(
            f"the policy lists {', '.join(repr(j) for j in managers)}: managers "
            "and supervisors never share tips (California Labor Code 351)"
        )
    return LocationPolicy(
        location_id, {str(job): _points(value, str(job)) for job, value in jobs.items()}
    )


def parse_pay_periods(raw: Any, name: str) -> PayPeriods:
    if raw is None:
        return PayPeriods()
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind == "weekly":
        first = str(raw.get("first_day", "monday")).casefold()
        if first not in WEEKDAYS:
            raise PolicyFileError(f"tip policy file {name}: pay_period.first_day {first!r}")
        return PayPeriods("weekly", first_weekday=WEEKDAYS.index(first))
    if kind == "biweekly":
        try:
            anchor = date.fromisoformat(str(raw.get("anchor")))
        except ValueError as exc:
            raise PolicyFileError(
                f"tip policy file {name}: pay_period.anchor is not a date (YYYY-MM-DD)"
            ) from exc
        return PayPeriods("biweekly", anchor=anchor)
    if kind == "semimonthly":
        return PayPeriods("semimonthly")
    raise PolicyFileError(
        f"tip policy file {name}: pay_period.kind is not weekly, biweekly or semimonthly"
    )


def parse_manager_titles(raw: Any, name: str) -> tuple[str, ...]:
    if raw is None:
        return DEFAULT_MANAGER_TITLES
    if not isinstance(raw, list) or not all(isinstance(t, str) and _words(t) for t in raw):
        raise PolicyFileError(f"tip policy file {name}: manager_titles is not a list of titles")
    return tuple(raw)


def load_policies(path: Path | str | None = None) -> TipPolicies:
    """The policy file (``TIP_POLICY_FILE``); PolicyFileError when it cannot be used."""
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
    pay_periods = parse_pay_periods(data.get("pay_period"), path.name)
    titles = parse_manager_titles(data.get("manager_titles"), path.name)
    usable: dict[str, LocationPolicy] = {}
    refused: dict[str, str] = {}
    for location_id, raw in policies.items():
        try:
            usable[str(location_id)] = parse_location(str(location_id), raw, titles)
        except ValueError as exc:
            refused[str(location_id)] = str(exc)
    return TipPolicies(usable, refused, pay_periods, titles)
