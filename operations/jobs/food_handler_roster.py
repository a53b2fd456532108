"""The roster as update_food_handler_pdfs reads it: one food handler per record, checked
against the columns it will be stored in before anything is written for it.

A record our rows cannot hold (a field missing or not text, a value longer than its
column, a control character or an unpaired surrogate, which PostgreSQL refuses, a date
outside 1900..2199, a certificate URL that does not parse) is a ``MalformedData``
naming the employee and the field: one error, never a failed save for the location.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, overload
from urllib.parse import unquote, urlparse

from tasks.tracker import TaskHandle

from ..models import FoodHandlerArchivedPacket, FoodHandlerCertificate, FoodHandlerPacket
from ..sources import Connector, SourceError
from . import JobFailed
from .columns import max_length
from .locations import MalformedData

# Roster dates outside these are typos; the bound also keeps ``hire_date + GRACE`` from
# overflowing at date.max.
EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2199, 12, 31)

# What our rows can hold: a longer value is a malformed record, not a DataError on save.
MAX_LENGTHS = {
    "employee_id": max_length(FoodHandlerCertificate, "employee_id"),
    "name": max_length(FoodHandlerCertificate, "employee_name"),
    "location_id": min(
        max_length(FoodHandlerCertificate, "location_id"),
        max_length(FoodHandlerPacket, "location_id"),
        max_length(FoodHandlerArchivedPacket, "location_id"),
    ),
    "location_name": min(
        max_length(FoodHandlerPacket, "location_name"),
        max_length(FoodHandlerArchivedPacket, "location_name"),
    ),
    "job": max_length(FoodHandlerCertificate, "job"),
    "card_number": max_length(FoodHandlerCertificate, "card_number"),
    "issuer": max_length(FoodHandlerCertificate, "issuer"),
    "certificate_url": max_length(FoodHandlerCertificate, "source_url"),
}


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


def unstorable(value: str) -> str:
    """Why a column cannot take ``value`` ("" when it can): a control character
    (PostgreSQL refuses NUL), or not UTF-8 (a JSON ``\\ud800`` decodes to an unpaired
    surrogate that no database encodes)."""
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        return "holds a control character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid text (an unpaired surrogate)"
    return ""


def storable(value: str) -> bool:
    return not unstorable(value)


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
    if why := unstorable(value):
        raise MalformedData(f"{where}: {key} {why}")
    return value


def _text(raw: dict, key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise MalformedData(f"{where}: {key} missing")
    return _fits(value.strip(), key, where)


def _optional_text(raw: dict, key: str, where: str) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedData(f"{where}: {key} is not text")
    return _fits(value.strip(), key, where)


def _certificate_url(raw: dict, where: str) -> str:
    """A URL both connectors can take: it parses, and holds no control character (a NUL,
    even percent-encoded, makes a file path raise)."""
    url = _text(raw, "certificate_url", where)
    try:
        urlparse(url)  # a bracketed host that is no IPv6 address raises
    except ValueError as exc:
        raise MalformedData(f"{where}: certificate_url is not a valid URL ({exc})") from exc
    if not storable(unquote(url)):
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


def _where(raw: dict, index: int) -> str:
    """How an error names the record: its employee id when that is printable text."""
    emp_id = raw.get("employee_id")
    if isinstance(emp_id, str) and emp_id.strip() and storable(emp_id):
        return f"employee {emp_id.strip()[:80]}"
    return f"employee #{index}"


def parse_employee(raw: Any, index: int) -> FoodHandler:
    """One roster record; MalformedData naming the record and the field."""
    if not isinstance(raw, dict):
        raise MalformedData(f"employee #{index}: not an object")
    where = _where(raw, index)
    return FoodHandler(
        employee_id=_text(raw, "employee_id", where),
        name=_text(raw, "name", where),
        location_id=_text(raw, "location_id", where),
        location_name=_optional_text(raw, "location_name", where),
        job=_optional_text(raw, "job", where),
        hire_date=_date(raw.get("hire_date"), f"{where} hire_date"),
        card=parse_card(raw.get("food_handler"), where),
    )


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
        if (
            isinstance(location_id, str)
            and len(location_id) <= MAX_LENGTHS["location_id"]
            and storable(location_id)
        ):
            by_location.setdefault(location_id, [])
        if not isinstance(raw, dict) or raw.get("handles_food") is not True:
            continue
        try:
            handler = parse_employee(raw, index)
        except MalformedData as exc:
            emp_id = raw.get("employee_id")
            if isinstance(emp_id, str) and storable(emp_id):  # its row, if any, is kept
                malformed.add(emp_id.strip())
            task.error(f"malformed roster record: {exc}")
            continue
        by_location.setdefault(handler.location_id, []).append(handler)
    return by_location, malformed
