"""The connector interface shared by every source and target.

Jobs see only this interface: where data comes from (a directory of exports or
an HTTP API) is chosen by URL in settings, so the jobs are tested once and the
transport separately.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

# A certificate larger than this is not a certificate: refuse it rather than fill the disk.
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024


class SourceError(Exception):
    """A source or target is unreachable, misconfigured or answered garbage.

    The message is meant for people: it names the source and the reason, never
    a token or a stack trace.
    """


class SourceUnavailable(SourceError):
    """The source did not answer (connection errors, timeouts, 429 or 5xx) through all its
    retries: a passing reason, worth running the job again later (``operations.retries``)."""


class DataNotFound(SourceError):
    """The source is fine but has no data for what was asked (a location-day)."""


@dataclass(frozen=True)
class FetchedDocument:
    """A document from a source: its bytes, or ``None`` when unchanged since ``etag``."""

    content: bytes | None
    etag: str
    content_type: str = ""

    @property
    def not_modified(self) -> bool:
        return self.content is None


class Connector(ABC):
    """One small interface for the sales, timeclock and invoice sources and the AP target."""

    url: str

    # Sales
    @abstractmethod
    def list_locations(self) -> list[dict[str, Any]]:
        """Locations (restaurants) as ``{"id", "name", "timezone"}`` dicts."""

    @abstractmethod
    def fetch_checks(self, business_date: date, location_id: str) -> list[dict[str, Any]]:
        """All checks of one location for one business date; DataNotFound when none exist."""

    @abstractmethod
    def fetch_cash_tips(self, business_date: date, location_id: str) -> list[dict[str, Any]]:
        """Cash tips declared at one location for one business date, as
        ``{"employee_id", "amount"}`` dicts; DataNotFound when nothing was declared."""

    # Timeclock
    @abstractmethod
    def fetch_shifts(self, business_date: date, location_id: str) -> list[dict[str, Any]]:
        """All shifts (punches) of one location for one business date; DataNotFound when none
        exist."""

    # Invoices
    @abstractmethod
    def list_vendors(self) -> list[dict[str, Any]]:
        """Known vendors as ``{"id", "name"}`` dicts."""

    @abstractmethod
    def iter_invoices(self, updated_since: datetime | None) -> Iterator[dict[str, Any]]:
        """Invoices (header with ``lines``) changed after ``updated_since`` (all when None)."""

    # Roster
    @abstractmethod
    def list_employees(self) -> list[dict[str, Any]]:
        """Employees with location, job, hire date, email and food handler card."""

    @abstractmethod
    def fetch_document(self, ref: str, *, etag: str = "") -> FetchedDocument:
        """A document named by ``ref`` (relative to the source, or an absolute URL of the
        same kind); not modified (``content`` None) when it still matches ``etag``."""

    # Accounting target
    @abstractmethod
    def send_batch(self, batch_id: str, payload: dict[str, Any]) -> str:
        """Deliver one AP import batch; idempotent per ``batch_id``. Returns a reference."""

    @abstractmethod
    def send_file(self, kind: str, name: str, content: bytes, content_type: str) -> str:
        """Deliver one file (a payroll import, say) of ``kind``; idempotent per ``name``.
        Returns a reference."""
