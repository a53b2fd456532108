"""The wire format of a live update: the only place it exists.

A task row, or its document (``tasks.serializers.task_document``), becomes an
``Update`` here and only here (``encode``, ``encode_document``): the exact
WebSocket text frame every client receives,
``{"type":"task_status","payload":{…document…}}``, encoded once, behind a
one-line routing header. On the updates channel an update travels as::

    <task_id> <operation> <version> <status>\\n<frame text>

(``Update.message``), so that the hub routes it by its header without parsing
the JSON (``Update.parse``). The frame bytes a client's socket is sent
(``Update.frame``) are built from it at most once per process, and
``conflate`` is the one rule by which newer progress replaces older.

Users: ``broadcast`` publishes ``encode(task).message``; the hub's gap repair
and embedded polling route ``encode(task)`` of rows read from the database;
the consumer's catch-up sends ``encode(task)``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..models import TaskStatus
from ..serializers import task_document

_UPDATED_AT = '"updated_at":'


class Update:
    """One change as the hub routes it; its WebSocket frame is built at most once."""

    __slots__ = ("task_id", "operation", "version", "status", "text", "conflatable", "_frame")

    def __init__(self, task_id: str, operation: str, version: int, status: str, text: str):
        self.task_id = task_id
        self.operation = operation
        self.version = version
        self.status = status
        self.text = text
        self.conflatable = False
        self._frame: bytes | None = None

    @classmethod
    def parse(cls, data: str | bytes) -> Update:
        """An update off the channel; ``ValueError``/``UnicodeDecodeError`` if malformed."""
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        header, text = data.split("\n", 1)
        task_id, operation, version, status = header.split(" ")
        return cls(task_id, operation, int(version), status, text)

    @property
    def message(self) -> str:
        """What goes on the updates channel: the routing header line, then the frame text."""
        return f"{self.task_id} {self.operation} {self.version} {self.status}\n{self.text}"

    @property
    def frame(self) -> bytes:
        """The whole server-to-client text frame (unmasked, uncompressed), for every client.

        An uncompressed frame is valid on every connection, permessage-deflate
        negotiated or not, so one byte string serves them all.
        """
        if self._frame is None:
            payload = self.text.encode("utf-8")
            size = len(payload)
            if size < 126:
                head = bytes((0x81, size))
            elif size < 65536:
                head = b"\x81\x7e" + size.to_bytes(2, "big")
            else:
                head = b"\x81\x7f" + size.to_bytes(8, "big")
            self._frame = head + payload
        return self._frame


def encode_document(document: dict[str, Any]) -> Update:
    """The update of one task document: the frame text encoded once, for every client."""
    text = json.dumps(
        {"type": "task_status", "payload": document},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return Update(
        str(document["task_id"]),
        document["operation"],
        document["version"],
        document["status"],
        text,
    )


def encode(task: TaskStatus) -> Update:
    """The update of one task row (publish, catch-up and gap repair all use this)."""
    return encode_document(task_document(task))


def conflate(updates: list[Update]) -> list[Update]:
    """Newest progress per task wins; transitions and final states keep their place.

    A conflatable update (same status as the one before it, not terminal)
    replaces the task's pending conflatable update if nothing of that task
    came after it; anything else is kept, in order.
    """
    kept: list[Update] = []
    replaceable: dict[str, int] = {}
    for update in updates:
        index = replaceable.get(update.task_id)
        if update.conflatable and index is not None:
            kept[index] = update
            continue
        if update.conflatable:
            replaceable[update.task_id] = len(kept)
        else:
            replaceable.pop(update.task_id, None)
        kept.append(update)
    return kept


def age(update: Update) -> float | None:
    """Seconds since the task's ``updated_at`` (whole seconds in the payload).

    The wire format carries no publish time; ``updated_at`` is the last key but
    ``version`` of the frame, so it is found from the end without parsing the JSON.
    """
    text = update.text
    at = text.rfind(_UPDATED_AT)
    if at < 0:
        return None
    start = at + len(_UPDATED_AT)
    end = text.find(",", start)
    try:
        return max(0.0, time.time() - int(text[start : end if end > 0 else None]))
    except ValueError:
        return None
