"""Keep credentials out of logs.

Browsers can only send a WebSocket token in the URL (``?access_token=``), and
URLs are logged: by daphne's access log (a plain stream, not Python logging),
by ``runserver`` and by Django's request loggers. ``RedactTokensFilter`` cleans
log records (attach it to every handler: handler filters also see records that
propagate from child loggers); ``install_daphne_access_log_redaction`` does the
same for daphne's access log, which no logging filter reaches.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

REDACTED = "[REDACTED]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Query or form parameters that carry credentials, plain or percent-encoded.
    (
        re.compile(
            r"(?i)\b((?:access_token|id_token|refresh_token|client_secret|assertion)"
            r"(?:=|%3D))[^&\s\"'#;]*"
        ),
        r"\1" + REDACTED,
    ),
    # The authorization code of the staff pages' login callback.
    (re.compile(r"(?i)([?&](?:code|session_state)(?:=|%3D))[^&\s\"'#;]*"), r"\1" + REDACTED),
    # Authorization headers.
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
    # Anything shaped like a JWT (a JSON header starts "eyJ").
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # A signed document link (operations.documents): personal data behind a login, but
    # a link is still a credential of sorts.
    (re.compile(r"(/documents/)[A-Za-z0-9_:.-]{8,}"), r"\1" + REDACTED),
    # A local API token wherever it appears (tasks.auth.identity.TOKEN_PREFIX).
    (re.compile(r"\btsk_[A-Za-z0-9_-]{8,}"), REDACTED),
    # The password in a URL's user info: DATABASE_URL, REDIS_URL, EMAIL_URL, a source's
    # URL, quoted by a library's error (user:password@host keeps the user, drops the rest).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@"), r"\1" + REDACTED + "@"),
)


def redact(text: str) -> str:
    """``text`` with every credential pattern replaced by ``[REDACTED]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactTokensFilter(logging.Filter):
    """Rewrites a record whose formatted message holds a credential; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is not ours to fix here
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def _write_json_entry(
    generator: Any,
    host: Any,
    date: Any,
    request: Any,
    status: Any = None,
    length: Any = None,
    ident: Any = None,
    user: Any = None,
) -> None:
    """daphne's access line as one JSON object (LOG_FORMAT=json), like every other line."""
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": "INFO",
        "logger": "daphne.access",
        "message": f"{request} {status if status is not None else '-'}",
        "client": str(host),
        "status": status,
        "length": length,
    }
    generator.stream.write(json.dumps(entry, default=str) + "\n")
    generator.stream.flush()


def install_daphne_access_log_redaction() -> None:
    """Make daphne's access log (``--access-log``) write redacted request lines.

    daphne builds each line in ``AccessLogGenerator.write_entry`` and writes it
    straight to a stream, with the full URI of HTTP requests; there is no hook,
    so the method is wrapped once, at app loading (before daphne creates its
    generator).
    """
    try:
        from daphne.access import AccessLogGenerator
    except ImportError:  # daphne not installed: nothing to do
        return
    if getattr(AccessLogGenerator, "_redacts_tokens", False):
        return
    original = AccessLogGenerator.write_entry

    def write_entry(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "request" in kwargs:
            kwargs["request"] = redact(str(kwargs["request"]))
        elif len(args) >= 3:
            args = (*args[:2], redact(str(args[2])), *args[3:])
        if settings.LOG_FORMAT == "json":
            return _write_json_entry(self, *args, **kwargs)
        return original(self, *args, **kwargs)

    AccessLogGenerator.write_entry = write_entry
    AccessLogGenerator._redacts_tokens = True
