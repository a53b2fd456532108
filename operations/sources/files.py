"""A directory of JSON or CSV exports: the embedded default and the committed sample data.

Layout (see ``scripts/generate_sample_data.py``)::

    <sales dir>/locations.json
    <sales dir>/<YYYY-MM-DD>/<location_id>.json[.gz]     {"checks": [...]}
    <sales dir>/<YYYY-MM-DD>/<location_id>.cash-tips.json {"declarations": [...]}
    <timeclock dir>/locations.json
    <timeclock dir>/<YYYY-MM-DD>/<location_id>.json[.gz] {"shifts": [...]}
    <invoice dir>/vendors.json
    <invoice dir>/*.json[.gz]                            {"invoices": [...]}
    <invoice dir>/*.csv                                  one row per invoice line
    <roster dir>/employees.json                          {"employees": [...]}
    <roster dir>/<certificate_url>                       a certificate PDF (relative path)
    <accounting dir>/ap-batch-<batch_id>.json            written by send_batch
    <accounting dir>/<kind>/<name>                       written by send_file
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from django.conf import settings

from .base import MAX_DOCUMENT_BYTES, Connector, DataNotFound, FetchedDocument, SourceError

INVOICE_HEADER_FIELDS = (
    "vendor_id",
    "invoice_number",
    "document_type",
    "invoice_date",
    "due_date",
    "location_id",
    "currency",
    "subtotal",
    "tax",
    "total",
    "updated_at",
)
LINE_FIELDS = ("line_no", "sku", "description", "qty", "unit_price", "amount")


def path_from_url(url: str) -> Path:
    """``file:///abs`` or ``file://relative/dir`` (relative to the project, never cwd)."""
    parsed = urlparse(url)
    raw = unquote(parsed.netloc + parsed.path)
    path = Path(raw)
    if not path.is_absolute():
        path = Path(settings.BASE_DIR) / path
    return path


def parse_timestamp(value: str) -> datetime:
    """ISO 8601 with ``Z`` or an offset; a naive value is UTC."""
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class FileConnector(Connector):
    """Reads exports from a directory; writes AP batches as files, atomically."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.root = path_from_url(url)

    def __repr__(self) -> str:
        return f"FileConnector({self.root.name})"

    def _load(self, path: Path) -> Any:
        try:
            raw = path.read_bytes()
            if path.suffix == ".gz":
                raw = gzip.decompress(raw)
            return json.loads(raw)
        except FileNotFoundError as exc:
            raise DataNotFound(f"{path.name} not found") from exc
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise SourceError(f"{path.name} is corrupt ({exc.__class__.__name__}: {exc})") from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SourceError(f"{path.name} is not valid JSON ({exc})") from exc

    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise SourceError(f"source directory {self.root} does not exist")

    def list_locations(self) -> list[dict[str, Any]]:
        self._require_root()
        data = self._load(self.root / "locations.json")
        locations = data.get("locations") if isinstance(data, dict) else None
        if not isinstance(locations, list):
            raise SourceError("locations.json has no 'locations' list")
        return locations

    def _location_day(
        self, business_date: date, location_id: str, key: str, what: str
    ) -> list[dict[str, Any]]:
        self._require_root()
        folder = self.root / business_date.isoformat()
        for name in (f"{location_id}.json.gz", f"{location_id}.json"):
            path = folder / name
            if path.exists():
                data = self._load(path)
                rows = data.get(key) if isinstance(data, dict) else data
                if not isinstance(rows, list):
                    raise SourceError(f"{path.name} has no '{key}' list")
                return rows
        raise DataNotFound(f"no {what} export for {business_date.isoformat()}")

    def fetch_checks(self, business_date: date, location_id: str) -> list[dict[str, Any]]:
        return self._location_day(business_date, location_id, "checks", "sales")

    def fetch_shifts(self, business_date: date, location_id: str) -> list[dict[str, Any]]:
        return self._location_day(business_date, location_id, "shifts", "timeclock")

    def fetch_cash_tips(self, business_date: date, location_id: str) -> list[dict[str, Any]]:
        self._require_root()
        path = self.root / business_date.isoformat() / f"{location_id}.cash-tips.json"
        data = self._load(path)
        rows = data.get("declarations") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise SourceError(f"{path.name} has no 'declarations' list")
        return rows

    def list_employees(self) -> list[dict[str, Any]]:
        self._require_root()
        data = self._load(self.root / "employees.json")
        employees = data.get("employees") if isinstance(data, dict) else None
        if not isinstance(employees, list):
            raise SourceError("employees.json has no 'employees' list")
        return employees

    def fetch_document(self, ref: str, *, etag: str = "") -> FetchedDocument:
        """A file under the source directory; its size and modification time are the ETag,
        so an unchanged file is not read again."""
        self._require_root()
        root = self.root.resolve()
        try:
            path = path_from_url(ref) if ref.startswith("file://") else self.root / unquote(ref)
            resolved = path.resolve()
            if not resolved.is_relative_to(root):
                raise SourceError(f"document {ref!r} is outside the source directory")
            stat = resolved.stat()
        except FileNotFoundError as exc:
            raise DataNotFound(f"document {ref!r} not found") from exc
        except OSError as exc:
            raise SourceError(f"document {ref!r} unreadable ({exc.__class__.__name__})") from exc
        except ValueError as exc:  # a NUL in the path (even percent-encoded), file://[x
            raise SourceError(f"document {ref!r} is not a usable path ({exc})") from exc
        tag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        if etag and etag == tag:
            return FetchedDocument(None, tag)
        if stat.st_size > MAX_DOCUMENT_BYTES:
            raise SourceError(f"document {ref!r} is larger than {MAX_DOCUMENT_BYTES} bytes")
        try:
            content = resolved.read_bytes()
        except OSError as exc:
            raise SourceError(f"document {ref!r} unreadable ({exc.__class__.__name__})") from exc
        return FetchedDocument(content, tag)

    def list_vendors(self) -> list[dict[str, Any]]:
        self._require_root()
        data = self._load(self.root / "vendors.json")
        vendors = data.get("vendors") if isinstance(data, dict) else None
        if not isinstance(vendors, list):
            raise SourceError("vendors.json has no 'vendors' list")
        return vendors

    def iter_invoices(self, updated_since: datetime | None) -> Iterator[dict[str, Any]]:
        self._require_root()
        invoices: list[dict[str, Any]] = []
        for path in sorted(self.root.iterdir()):
            if path.name == "vendors.json" or path.name.startswith("."):
                continue
            if path.name.endswith((".json", ".json.gz")):
                data = self._load(path)
                rows = data.get("invoices") if isinstance(data, dict) else data
                if not isinstance(rows, list):
                    raise SourceError(f"{path.name} has no 'invoices' list")
                invoices.extend(rows)
            elif path.suffix == ".csv":
                invoices.extend(self._read_csv(path))
        for invoice in invoices:
            if updated_since is not None and isinstance(invoice, dict):
                try:
                    if parse_timestamp(invoice.get("updated_at", "")) <= updated_since:
                        continue
                except ValueError:
                    pass  # no usable timestamp: let validation report it
            yield invoice

    def _read_csv(self, path: Path) -> list[dict[str, Any]]:
        """Group line rows back into invoices, keyed by vendor and invoice number."""
        grouped: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    key = (row.get("vendor_id", ""), row.get("invoice_number", ""))
                    head = grouped.setdefault(
                        key, {**{f: row.get(f) for f in INVOICE_HEADER_FIELDS}, "lines": []}
                    )
                    head["lines"].append({f: row.get(f) for f in LINE_FIELDS})
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise SourceError(f"{path.name} is not readable CSV ({exc})") from exc
        return list(grouped.values())

    def send_batch(self, batch_id: str, payload: dict[str, Any]) -> str:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            target = self.root / f"ap-batch-{batch_id}.json"
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".ap-batch-", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, indent=1, default=str)
            os.replace(tmp, target)
        except OSError as exc:
            raise SourceError(f"accounting target {self.root} not writable ({exc})") from exc
        return target.name

    def send_file(self, kind: str, name: str, content: bytes, content_type: str) -> str:
        """Written atomically as ``<root>/<kind>/<name>``; writing it again replaces it."""
        if "/" in name or "/" in kind or name.startswith(".") or kind.startswith("."):
            raise SourceError(f"bad file name {kind}/{name}")
        folder = self.root / kind
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            os.replace(tmp, folder / name)
        except OSError as exc:
            raise SourceError(f"accounting target {self.root} not writable ({exc})") from exc
        return f"{kind}/{name}"
