"""Sources and targets, chosen by URL scheme: ``file://<dir>`` or ``http(s)://<base>``."""

from __future__ import annotations

from urllib.parse import urlparse

from django.conf import settings

from .base import Connector, DataNotFound, FetchedDocument, SourceError, SourceUnavailable
from .files import FileConnector
from .http import HttpConnector

__all__ = [
    "Connector",
    "DataNotFound",
    "FetchedDocument",
    "SourceError",
    "SourceUnavailable",
    "connect",
    "sales_source",
    "timeclock_source",
    "invoice_source",
    "roster_source",
    "accounting_target",
]


def connect(url: str, *, quick: bool = False) -> Connector:
    """Build the connector for ``url``; a URL we cannot use is a SourceError, not a crash.

    ``quick`` is for checks made while a user waits: one attempt, a short timeout.
    """
    scheme = urlparse(url or "").scheme.lower()
    if scheme == "file":
        return FileConnector(url)
    if scheme in ("http", "https"):
        connector = HttpConnector(url, token=getattr(settings, "SOURCE_TOKEN", ""))
        if quick:
            connector.max_retries = 0
            connector.timeout = (2.0, 5.0)
        return connector
    raise SourceError(f"unsupported source URL {url!r}: expected file:// or http(s)://")


def sales_source() -> Connector:
    return connect(settings.SALES_SOURCE_URL)


def timeclock_source() -> Connector:
    return connect(settings.TIMECLOCK_SOURCE_URL)


def invoice_source() -> Connector:
    return connect(settings.INVOICE_SOURCE_URL)


def roster_source() -> Connector:
    return connect(settings.ROSTER_SOURCE_URL)


def accounting_target() -> Connector:
    return connect(settings.ACCOUNTING_TARGET_URL)
