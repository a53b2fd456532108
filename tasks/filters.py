"""The query parameters of the list and the timeline, as DRF serializers.

Each malformed parameter is a 400 that names it (``BadParameter``); the raw
values of the filters are kept too, because a cursor is bound to them. The
pages read the same filters through ``page_filters``, which applies the same
rules but drops what the API would refuse: a bookmarked monitor URL with a
status that no longer exists still opens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rest_framework import serializers

from .exceptions import BadParameter
from .models import Operation, Status, unknown_operation
from .pagination import read_cursor

MAX_LIMIT = 1000
DEFAULT_LIMIT = 500
_DIGITS = re.compile(r"[0-9]{1,7}")
_UNIX_SECONDS = re.compile(r"[0-9]{1,15}(\.[0-9]{1,9})?")


def operation_filter(raw: str) -> str:
    """``operation=``: one of the seven."""
    if raw not in Operation.values:
        raise serializers.ValidationError(unknown_operation(raw))
    return raw


def status_filter(raw: str) -> list[str]:
    """``status=``: comma-separated statuses, each one of the six."""
    values = [value.strip() for value in raw.split(",") if value.strip()]
    bad = [value for value in values if value not in Status.values]
    if bad or not values:
        raise serializers.ValidationError(
            f"unknown status {', '.join(bad) or raw!r}; valid: {', '.join(Status.values)}"
        )
    return values


def page_filters(query: Any) -> tuple[str | None, list[str] | None]:
    """(operation, statuses) of a page's URL by the API's rules, ignoring what they refuse:
    an unknown operation means all, and each unknown status is left out."""
    try:
        operation: str | None = operation_filter(query.get("operation", ""))
    except serializers.ValidationError:
        operation = None
    statuses = []
    for raw in query.get("status", "").split(","):
        try:
            statuses += status_filter(raw)
        except serializers.ValidationError:
            continue
    return operation, statuses or None


@dataclass(frozen=True)
class ListQuery:
    operation: str | None
    statuses: list[str] | None
    updated_since: float | None
    limit: int
    after: tuple[float, str] | None
    # The filters as sent: what a cursor is bound to and what the next link repeats.
    filters: dict[str, str | None]


class TaskListFilters(serializers.Serializer):
    operation = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    status = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    updated_since = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    limit = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    cursor = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)

    def validate_operation(self, raw: str) -> str:
        return operation_filter(raw)

    def validate_status(self, raw: str) -> list[str]:
        return status_filter(raw)

    def validate_updated_since(self, raw: str) -> float:
        if not _UNIX_SECONDS.fullmatch(raw):
            raise serializers.ValidationError("must be Unix seconds (a non-negative number)")
        return float(raw)  # at most 15 digits: always finite

    def validate_limit(self, raw: str) -> int:
        # ASCII digits only: int() would also take "１" or " 5_0 ".
        if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
            raise serializers.ValidationError(f"must be an integer from 1 to {MAX_LIMIT}")
        return int(raw)


# The parameter names, in declaration order: read once, not by building the
# serializer's fields (a deep copy of each) a second time on every request.
_LIST_NAMES: tuple[str, ...] = tuple(TaskListFilters._declared_fields)


def parse_list_query(query: Any) -> ListQuery:
    """The validated query of ``GET /task-status``, or a 400 naming the first bad parameter."""
    names = _LIST_NAMES
    raw = {name: query.get(name) for name in names if name in query}
    checked = TaskListFilters(data=raw)
    if not checked.is_valid():
        name = next(name for name in names if name in checked.errors)
        raise BadParameter(name, str(checked.errors[name][0]))
    data = checked.validated_data
    filters = {
        "operation": raw.get("operation"),
        "status": raw.get("status"),
        "updated_since": raw.get("updated_since"),
    }
    after = read_cursor(raw["cursor"], filters) if "cursor" in raw else None
    return ListQuery(
        operation=data.get("operation"),
        statuses=data.get("status"),
        updated_since=data.get("updated_since"),
        limit=data.get("limit", DEFAULT_LIMIT),
        after=after,
        filters=filters,
    )


class TaskEventFilters(serializers.Serializer):
    after_version = serializers.CharField(required=False, trim_whitespace=False)

    def validate_after_version(self, raw: str) -> int:
        if not _DIGITS.fullmatch(raw):
            raise serializers.ValidationError("must be a version (a non-negative integer)")
        return int(raw)


def parse_events_query(query: Any) -> int:
    """``after_version`` of ``GET /task-status/{id}/events`` (0: the whole timeline)."""
    raw = {"after_version": query["after_version"]} if "after_version" in query else {}
    checked = TaskEventFilters(data=raw)
    if not checked.is_valid():
        raise BadParameter("after_version", str(checked.errors["after_version"][0]))
    return int(checked.validated_data.get("after_version", 0))
