"""Which failures are the same failure: an error message with its variable parts folded.

"L03: sales source unreachable after 4 attempts (timed out after 30s)" and the
same for L07 with 3 attempts are one failure to whoever reads the alerts. The
folded text keeps the words and replaces what changes from run to run (ids,
UUIDs, numbers, dates, times, quoted values, URLs) with a placeholder, so that
the alert throttle (``operations.alert_throttle``) can count them as one, and
staff see an operation's failures grouped (``/schedule``, ``GET
/operations/{op}/stats``) and acknowledge each with a note (who, when), kept
beside the task (``FailureAcknowledgement``): a finished task never changes.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from tasks.models import Status, TaskStatus

from .models import FailureAcknowledgement

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


# -- failure groups and acknowledgements ---------------------------------------------

# The failed runs looked at per operation, newest first (the task TTL bounds them too).
GROUPED_FAILURES = 200
NOTE_MAX_CHARS = 2000


def failure_groups(operation: str, *, now: float | None = None) -> list[dict[str, Any]]:
    """The operation's failed runs grouped by folded error: count, last seen, unacknowledged."""
    now = time.time() if now is None else now
    rows = list(
        TaskStatus.objects.filter(operation=operation, status=Status.FAILED, expires_at__gt=now)
        .order_by("-created_at")
        .values_list("task_id", "error", "updated_at")[:GROUPED_FAILURES]
    )
    acknowledged = set(
        FailureAcknowledgement.objects.filter(
            task_id__in=[str(task_id) for task_id, _, _ in rows]
        ).values_list("task_id", flat=True)
    )
    groups: dict[str, dict[str, Any]] = {}
    for task_id, error, updated_at in rows:
        folded = fold_error(error) or "(no error message)"
        group = groups.setdefault(
            folded,
            {
                "error": folded,
                "count": 0,
                "unacknowledged": 0,
                "last_seen": int(updated_at),
                "last_task_id": str(task_id),
            },
        )
        group["count"] += 1
        if str(task_id) not in acknowledged:
            group["unacknowledged"] += 1
    return sorted(groups.values(), key=lambda group: -group["last_seen"])


def unacknowledged(hidden: frozenset[str], *, now: float | None = None) -> int:
    """Failed runs this reader may see that nobody has acknowledged (the monitor's header)."""
    now = time.time() if now is None else now
    ids = {
        str(task_id)
        for task_id in TaskStatus.objects.filter(status=Status.FAILED, expires_at__gt=now)
        .exclude(operation__in=hidden)
        .order_by("-created_at")
        .values_list("task_id", flat=True)[: GROUPED_FAILURES * 5]
    }
    done = set(
        FailureAcknowledgement.objects.filter(task_id__in=ids).values_list("task_id", flat=True)
    )
    return len(ids - done)


def acknowledge(task: TaskStatus, *, by: str, note: str) -> FailureAcknowledgement:
    """Record that ``by`` looked at this failed run; the first acknowledgement stays."""
    if task.status != Status.FAILED:
        raise ValueError("only a failed run is acknowledged")
    ack, _ = FailureAcknowledgement.objects.get_or_create(
        task_id=str(task.task_id),
        defaults={"operation": task.operation, "by": by[:150], "note": note[:NOTE_MAX_CHARS]},
    )
    return ack


def acknowledgement(task_id: str) -> FailureAcknowledgement | None:
    return FailureAcknowledgement.objects.filter(task_id=task_id).first()
