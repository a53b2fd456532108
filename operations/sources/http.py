"""An HTTP JSON API with a bearer token, paging, timeouts and retries.

The API (served in tests by ``tests/support/source_server.py``)::

    GET  <base>/locations                                   {"data": [...]}
    GET  <base>/checks?business_date=&location=&page=N      {"data": [...], "next_page": N|null}
    GET  <base>/shifts?business_date=&location=&page=N      {"data": [...], "next_page": N|null}
    GET  <base>/cash-tips?business_date=&location=&page=N   {"data": [...], "next_page": N|null}
    GET  <base>/vendors                                     {"data": [...]}
    GET  <base>/employees?page=N                            {"data": [...], "next_page": N|null}
    GET  <base>/<certificate_url> or an absolute URL        the document (If-None-Match -> 304)
    GET  <base>/invoices?updated_since=&page=N              {"data": [...], "next_page": N|null}
    POST <base>/ap-batches  (Idempotency-Key: batch id)     {"reference": "..."}
    POST <base>/<kind>-files (Idempotency-Key: file name)   {"reference": "..."}  (a file)

Targets are collections named like ``ap-batches``: the tips payroll file (kind
``payroll``) goes to ``POST <base>/payroll-files``; a directory target writes it
to ``<dir>/payroll/<name>``.

The bearer token (``SOURCE_TOKEN``) travels over https only, or to a loopback
address: a request that would carry it over plain http elsewhere is refused with
a SourceError, and a document on a plain-http URL is fetched without it.

A 404 on ``checks`` or ``shifts`` means "no data for that location-day". 429 (honouring
``Retry-After``), 5xx, timeouts and refused connections are retried with
exponential backoff; anything else that is not the expected JSON is a
SourceError naming the URL, so a job can report it and go on.
"""

from __future__ import annotations

import email.utils
import ipaddress
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlparse

import requests
from django.conf import settings

from .base import (
    MAX_DOCUMENT_BYTES,
    Connector,
    DataNotFound,
    FetchedDocument,
    SourceError,
    SourceUnavailable,
)

MAX_PAGES = 10_000  # a source that pages forever is garbage, not data


def may_carry_token(url: str) -> bool:
    """https, or plain http to this machine: a bearer token never crosses a network bare."""
    parsed = urlparse(url)
    if parsed.scheme == "https":
        return True
    host = (parsed.hostname or "").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


class HttpConnector(Connector):
    """Talks to the source API; every request is bounded by a timeout and a retry budget."""

    def __init__(
        self,
        url: str,
        *,
        token: str = "",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        parsed = urlparse(self.url)
        self.label = f"{parsed.scheme}://{parsed.netloc}{parsed.path}"
        self.timeout = (
            min(5.0, _setting("SOURCE_TIMEOUT_SECONDS", 30)),
            _setting("SOURCE_TIMEOUT_SECONDS", 30),
        )
        self.max_retries = int(_setting("SOURCE_MAX_RETRIES", 4))
        self.backoff = _setting("SOURCE_BACKOFF_SECONDS", 0.5)
        self.max_wait = _setting("SOURCE_MAX_RETRY_WAIT_SECONDS", 60)
        self.page_size = int(_setting("SOURCE_PAGE_SIZE", 500))
        self.sleep = sleep
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"HttpConnector({self.label})"

    # transport
    def _wait(self, attempt: int, response: requests.Response | None) -> float:
        """Retry-After when the server gives one (seconds or HTTP date), else backoff + jitter."""
        if response is not None:
            header = response.headers.get("Retry-After", "").strip()
            if header:
                try:
                    seconds = float(header)
                except ValueError:
                    try:
                        when = email.utils.parsedate_to_datetime(header)
                        seconds = (when - datetime.now(UTC)).total_seconds()
                    except (TypeError, ValueError):
                        seconds = self.backoff
                return min(max(seconds, 0.0), self.max_wait)
        return min(self.backoff * (2**attempt) * (1 + random.random() / 4), self.max_wait)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._response(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise SourceError(f"{self.label}/{path}: malformed response (not JSON)") from exc

    def _response(
        self, method: str, path: str, *, url: str = "", **kwargs: Any
    ) -> requests.Response:
        """A 2xx or 304 response, after retries; anything else is a SourceError."""
        url = url or f"{self.url}/{path}"
        override = (kwargs.get("headers") or {}).get("Authorization", "")
        if self.session.headers.get("Authorization") and override is not None:
            if not may_carry_token(url):
                raise SourceError(
                    f"{self.label}: SOURCE_TOKEN is only sent over https (or to loopback); "
                    f"refusing to send it over plain http to {urlparse(url).hostname}"
                )
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            response = None
            try:
                response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except requests.Timeout:
                last = f"timed out after {self.timeout[1]:g}s"
            except requests.ConnectionError as exc:
                last = f"unreachable ({exc.__class__.__name__})"
            except requests.RequestException as exc:
                raise SourceError(f"{self.label}: bad request ({exc})") from exc
            else:
                status = response.status_code
                if status == 404:
                    raise DataNotFound(f"{self.label}/{path}: not found")
                if status in (401, 403):
                    raise SourceError(
                        f"{self.label}: credentials refused (HTTP {status}); check SOURCE_TOKEN"
                    )
                if status == 429 or status >= 500:
                    last = f"HTTP {status}"
                elif status >= 400:
                    raise SourceError(f"{self.label}/{path}: HTTP {status}")
                else:
                    return response
            if attempt < self.max_retries:
                self.sleep(self._wait(attempt, response))
        raise SourceUnavailable(
            f"{self.label}/{path}: {last} (gave up after {self.max_retries + 1} attempts)"
        )

    def _get_list(self, path: str, params: dict[str, Any] | None = None) -> list[Any]:
        data = self._request("GET", path, params=params)
        rows = data.get("data") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise SourceError(f"{self.label}/{path}: malformed response (no 'data' list)")
        return rows

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[list[Any]]:
        page: Any = 1
        for _ in range(MAX_PAGES):
            data = self._request(
                "GET", path, params={**params, "page": page, "page_size": self.page_size}
            )
            rows = data.get("data") if isinstance(data, dict) else None
            if not isinstance(rows, list):
                raise SourceError(f"{self.label}/{path}: malformed page {page} (no 'data' list)")
            yield rows
            page = data.get("next_page")
            if page in (None, ""):
                return
        raise SourceError(f"{self.label}/{path}: more than {MAX_PAGES} pages")

    # Connector
    def list_locations(self) -> list[dict[str, Any]]:
        return self._get_list("locations")

    def _location_day(
        self, path: str, business_date: date, location_id: str, what: str
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        params = {"business_date": business_date.isoformat(), "location": location_id}
        try:
            for rows in self._pages(path, params):
                out.extend(rows)
        except DataNotFound as exc:
            raise DataNotFound(f"no {what} data for {business_date.isoformat()}") from exc
        return out

    def fetch_checks(self, business_date: date, location_id: str) -> list[dict[str, Any]]:
        return self._location_day("checks", business_date, location_id, "sales")

    def fetch_shifts(self, business_date: date, location_id: str) -> list[dict[str, Any]]:
        return self._location_day("shifts", business_date, location_id, "timeclock")

    def fetch_cash_tips(self, business_date: date, location_id: str) -> list[dict[str, Any]]:
        return self._location_day("cash-tips", business_date, location_id, "cash tips")

    def list_vendors(self) -> list[dict[str, Any]]:
        return self._get_list("vendors")

    def list_employees(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for rows in self._pages("employees", {}):
            out.extend(rows)
        return out

    def fetch_document(self, ref: str, *, etag: str = "") -> FetchedDocument:
        """A conditional GET: an unchanged document (304) is not downloaded again."""
        try:
            parsed = urlparse(ref)
        except ValueError as exc:  # a bracketed host that is no IPv6 address
            raise SourceError(f"document {ref!r}: not a valid URL ({exc})") from exc
        if parsed.scheme and parsed.scheme not in ("http", "https"):
            raise SourceError(f"document {ref!r}: not an http(s) URL")
        url = ref if parsed.scheme else f"{self.url}/{ref.lstrip('/')}"
        headers: dict[str, str | None] = {"Accept": "application/pdf, */*"}
        if parsed.netloc and parsed.netloc != urlparse(self.url).netloc:
            headers["Authorization"] = None  # our source token is not the provider's
        elif not may_carry_token(url):
            headers["Authorization"] = None  # nor is it sent in the clear
        if etag:
            headers["If-None-Match"] = etag
        path = parsed.path.rsplit("/", 1)[-1] or ref
        response = self._response("GET", path, url=url, headers=headers, stream=True)
        try:
            if response.status_code == 304:
                return FetchedDocument(None, etag)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > MAX_DOCUMENT_BYTES:
                    raise SourceError(f"document {path}: larger than {MAX_DOCUMENT_BYTES} bytes")
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise SourceError(
                f"document {path}: download broke off ({exc.__class__.__name__})"
            ) from exc
        finally:
            response.close()
        return FetchedDocument(
            b"".join(chunks),
            response.headers.get("ETag", ""),
            response.headers.get("Content-Type", ""),
        )

    def iter_invoices(self, updated_since: datetime | None) -> Iterator[dict[str, Any]]:
        params = {"updated_since": updated_since.isoformat()} if updated_since else {}
        for rows in self._pages("invoices", params):
            yield from rows

    def send_batch(self, batch_id: str, payload: dict[str, Any]) -> str:
        data = self._request(
            "POST", "ap-batches", json=payload, headers={"Idempotency-Key": batch_id}
        )
        if not isinstance(data, dict):
            raise SourceError(f"{self.label}/ap-batches: malformed response")
        return str(data.get("reference") or batch_id)

    def send_file(self, kind: str, name: str, content: bytes, content_type: str) -> str:
        """POST to ``<base>/<kind>-files``, a collection named as ``ap-batches`` is."""
        endpoint = f"{kind}-files"
        data = self._request(
            "POST",
            endpoint,
            data=content,
            headers={
                "Idempotency-Key": name,
                "Content-Type": content_type,
                "Content-Disposition": f'attachment; filename="{name}"',
            },
        )
        if not isinstance(data, dict):
            raise SourceError(f"{self.label}/{endpoint}: malformed response")
        return str(data.get("reference") or name)
