"""Which failures are the same failure: an error message with its variable parts folded.

"L03: sales source unreachable after 4 attempts (timed out after 30s)" and the
same for L07 with 3 attempts are one failure to whoever reads the alerts. The
folded text keeps the words and replaces what changes from run to run (ids,
UUIDs, numbers, dates, times, quoted values, URLs) with a placeholder, so that
the alert throttle (``operations.alert_throttle``) can count them as one.
"""

from __future__ import annotations

import hashlib
import re

MAX_FOLDED_CHARS = 500

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<value>"),
    (re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.I), "<url>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?\b"), "<date>"),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b"), "<time>"),
    (re.compile(r"\b[0-9a-f]{12,}\b", re.I), "<id>"),
    # Codes that mix letters and digits (L03, E0042, INV-2025-0001): the digits vary.
    (re.compile(r"\b[A-Za-z]+[-_]?\d[\w-]*\b"), "<id>"),
    (re.compile(r"\d+(?:[.,]\d+)*"), "<n>"),
]


def fold_error(message: str | None) -> str:
    """``message`` with its variable parts replaced, spaces collapsed; "" for none."""
    if not message:
        return ""
    folded = message
    for pattern, placeholder in _PATTERNS:
        folded = pattern.sub(placeholder, folded)
    return " ".join(folded.split())[:MAX_FOLDED_CHARS]


def failure_key(operation: str, status: str, message: str | None) -> str:
    """A short stable key for "this operation ended this way with this (folded) error"."""
    raw = "\x1f".join((operation, status, fold_error(message)))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]
