"""Opaque, signed keyset cursors for the task lists, announced in a ``Link`` header.

``KeysetLinkPagination`` is the DRF pagination class of the list endpoint: the
body stays a bare array, the next page is a ``Link: <…cursor=…>; rel="next"``.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlencode

from django.core import signing
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response

from .exceptions import BadParameter

_SALT = "tasks.pagination.cursor"
CURSOR_MAX_AGE = 3600


def _filters_fingerprint(filters: dict) -> str:
    text = "&".join(f"{k}={filters[k]}" for k in sorted(filters) if filters[k] is not None)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_cursor(position: tuple[float, str], filters: dict) -> str:
    return signing.dumps(
        {"c": position[0], "i": position[1], "f": _filters_fingerprint(filters)},
        salt=_SALT,
        compress=True,
    )


def read_cursor(raw: str, filters: dict) -> tuple[float, str]:
    """The keyset position, or a 400 for a forged, expired or foreign cursor."""
    try:
        data = signing.loads(raw, salt=_SALT, max_age=CURSOR_MAX_AGE)
        position = (float(data["c"]), str(data["i"]))
        fingerprint = data["f"]
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise BadParameter("cursor", "invalid or expired; start again without it") from None
    if fingerprint != _filters_fingerprint(filters):
        raise BadParameter("cursor", "was made for other filters")
    return position


def next_link(base_url: str, query: dict, cursor: str) -> str:
    params = {k: v for k, v in query.items() if k != "cursor" and v is not None}
    params["cursor"] = cursor
    return f'<{base_url}?{urlencode(params)}>; rel="next"'


class KeysetLinkPagination(BasePagination):
    """Newest-first pages keyed on ``(created_at, task_id)``; rows come with one extra, which
    says whether there is a next page."""

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any]:
        query = view.list_query
        rows = list(queryset)
        self.request, self.query = request, query
        self.last = rows[query.limit - 1] if len(rows) > query.limit else None
        return rows[: query.limit]

    def get_paginated_response(self, data: Any) -> Response:
        response = Response(data)
        if self.last is not None:
            query = self.query
            cursor = make_cursor((self.last.created_at, str(self.last.task_id)), query.filters)
            url = self.request.build_absolute_uri(self.request.path)
            response["Link"] = next_link(url, {**query.filters, "limit": query.limit}, cursor)
        return response

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return schema  # a bare array: the next page is in the Link header
