"""Log context: request ids (and a job's task id and operation) in every line, plain or JSON.

The middleware sets the request id, the job runner the task id and operation,
each in a context variable; a filter copies them onto every record, so a
formatter, plain or JSON, can print them. ``LOG_FORMAT=json`` gives one JSON
object a line, for a log system; plain text is the default.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
task_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("task_id", default="-")
operation_var: contextvars.ContextVar[str] = contextvars.ContextVar("operation", default="-")

_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def sane_request_id(value: str | None) -> str | None:
    """The caller's id if it is safe to echo and log, else None."""
    if value and _SANE_ID.match(value):
        return value
    return None


class RequestIDFilter(logging.Filter):
    """Puts the request id, task id and operation of the current context on a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        if not hasattr(record, "task_id"):
            record.task_id = task_id_var.get()
        if not hasattr(record, "operation"):
            record.operation = operation_var.get()
        return True


class AnsweredUnavailableFilter(logging.Filter):
    """Drops Django's ERROR line for a 503 ("Service Unavailable: /path").

    A 503 is this service saying "try again later" while a dependency is down, and
    the code that answered it has logged why, once, as a warning; an outage must not
    also raise an ERROR per request. Every other 5xx keeps its line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "status_code", None) != 503


# The access line's fields (tasks.middleware), each a key of its JSON object so that
# a log system can filter on them: the path without its query, the duration in
# milliseconds, the user (null when anonymous) and the client's address.
ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "user", "client")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the ids that apply and,
    on an access line, its fields (``ACCESS_FIELDS``).

    The message is the record's formatted message as the redaction filter left
    it, and a traceback goes in ``exc_info`` as the filter redacted it.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key in ("request_id", "task_id", "operation"):
            value = getattr(record, key, "-")
            if value and value != "-":
                entry[key] = value
        for key in ACCESS_FIELDS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)
