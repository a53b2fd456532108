"""Keep credentials out of logs.

Browsers can only send a WebSocket token in the URL (``?access_token=``), and
URLs are logged: by daphne's access log (a plain stream, not Python logging),
by ``runserver`` and by Django's request loggers. ``RedactTokensFilter`` cleans
log records (attach it to every handler: handler filters also see records that
propagate from child loggers); ``install_daphne_access_log_redaction`` does the
same for daphne's access log, which no logging filter reaches.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from tasks.logging import ACCESS_FIELDS

REDACTED = "[REDACTED]"

# Parameter names whose value is a secret wherever they appear (query, form, log text):
# any name ending so (access_token, csrfmiddlewaretoken, client_secret, X-Amz-Signature,
# X-Amz-Credential, x-api-key...). Short, common names (key, sig, code) only as a URL's
# parameter, after "?" or "&" (plain or percent-encoded): "exit code=1" is no secret.
_SECRET_NAME = (
    r"[\w.-]*(?:token|api[_-]?key|apikey|password|passwd|secret|signature|credential"
    r"|assertion)"
)
_SHORT_NAME = r"(?:key|sig|code|pwd|session_state)"
_VALUE = r"[^&\s\"'#;]*"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Query or form parameters that carry credentials, plain or percent-encoded.
    (re.compile(rf"(?i)(?<![\w.-])({_SECRET_NAME}(?:=|%3D)){_VALUE}"), r"\1" + REDACTED),
    (re.compile(rf"(?i)((?:[?&]|%3F|%26){_SHORT_NAME}(?:=|%3D)){_VALUE}"), r"\1" + REDACTED),
    # The same names as JSON keys: {"password": "..."}.
    (re.compile(rf"(?i)([\"']{_SECRET_NAME}[\"']\s*:\s*[\"'])[^\"']*"), r"\1" + REDACTED),
    # Authorization headers, whatever the scheme, and an API key header.
    (
        re.compile(
            r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
            r"(?:basic|bearer|token|digest|negotiate|ntlm|apikey)\s+)[^\s\"',;}]+"
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)(\bx-api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
    # Incoming webhooks: the path is the credential (Slack, Microsoft Teams).
    (
        re.compile(r"(?i)(\bhooks\.slack\.com/(?:services|workflows|triggers)/)[^\s\"'<>]+"),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)(\.webhook\.office\.com/)[^\s\"'<>]+"), r"\1" + REDACTED),
    (
        re.compile(r"(?i)(\boutlook\.office(?:365)?\.com/webhook(?:b2)?/)[^\s\"'<>]+"),
        r"\1" + REDACTED,
    ),
    # Anything shaped like a JWT (a JSON header starts "eyJ").
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # A signed document link (operations.documents): personal data behind a login, but
    # a link is still a credential of sorts.
    (re.compile(r"(/documents/)[A-Za-z0-9_:.-]{8,}"), r"\1" + REDACTED),
    # A local API token wherever it appears (tasks.auth.bearer.TOKEN_PREFIX).
    (re.compile(r"\btsk_[A-Za-z0-9_-]{8,}"), REDACTED),
    # The password in a URL's user info: DATABASE_URL, REDIS_URL, EMAIL_URL, a source's
    # URL, quoted by a library's error (user:password@host keeps the user, drops the rest).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@"), r"\1" + REDACTED + "@"),
)
# "Basic <base64>" outside a header's name: redacted when it decodes to "user:password"
# (so that "Basic authentication" in a sentence stays as it is).
_BASIC = re.compile(r"\b(Basic\s+)([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])")


def _basic_credentials(match: re.Match[str]) -> str:
    try:
        decoded = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        return match.group(0)
    return match.group(1) + REDACTED if b":" in decoded else match.group(0)


def redact(text: str) -> str:
    """``text`` with every credential pattern replaced by ``[REDACTED]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _BASIC.sub(_basic_credentials, text)


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
        for field in ACCESS_FIELDS:  # an access line's path may be a document link
            value = getattr(record, field, None)
            if isinstance(value, str):
                setattr(record, field, redact(value))
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
