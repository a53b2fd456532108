"""Opaque, signed keyset cursors for the task lists, announced in a ``Link`` header."""

from __future__ import annotations

import hashlib
from urllib.parse import urlencode

from django.core import signing

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
