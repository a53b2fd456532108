"""Request ids in log lines: a context variable set by the middleware, read by a filter."""

from __future__ import annotations

import contextvars
import logging
import re

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def sane_request_id(value: str | None) -> str | None:
    """The caller's id if it is safe to echo and log, else None."""
    if value and _SANE_ID.match(value):
        return value
    return None


class RequestIDFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True
