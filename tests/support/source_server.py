"""A real HTTP source API on loopback, serving the committed sample data.

It speaks the API of ``operations/sources/http.py`` (bearer token, paging,
certificates with ETags, AP batches and payroll files under ``/accounting``) and
can misbehave on demand: ``server.fail(path_part, action)`` queues one fault for
the next matching request, where action is ``"500"``, ``"429:<seconds>"``
(with Retry-After), ``"slow:<seconds>"`` or ``"malformed"``. A corrupt sample
file is served as the garbage it is.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"


class SourceServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, token: str = "test-token", sample: Path = SAMPLE) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.token = token
        self.sample = sample
        self.faults: list[tuple[str, str]] = []
        self.requests: list[tuple[str, str]] = []
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_posts = 0
        self.files: dict[str, bytes] = {}
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fail(self, path_part: str, action: str) -> None:
        with self.lock:
            self.faults.append((path_part, action))

    def take_fault(self, path: str) -> str | None:
        with self.lock:
            for i, (part, action) in enumerate(self.faults):
                if part in path:
                    del self.faults[i]
                    return action
        return None


def _invoices(sample: Path) -> list[dict[str, Any]]:
    """All sample invoices, read with the project's own file reader for the CSV part."""
    from operations.sources.files import FileConnector

    return list(FileConnector(f"file://{sample / 'invoices'}").iter_invoices(None))


class Handler(BaseHTTPRequestHandler):
    server: SourceServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode())

    def _paged(self, rows: list[Any], query: dict[str, list[str]]) -> None:
        page = int(query.get("page", ["1"])[0])
        size = int(query.get("page_size", ["500"])[0])
        chunk = rows[(page - 1) * size : page * size]
        more = page * size < len(rows)
        self._json(200, {"data": chunk, "next_page": page + 1 if more else None})

    def _pre(self) -> tuple[str, dict[str, list[str]]] | None:
        url = urlparse(self.path)
        self.server.requests.append((self.command, self.path))
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self._json(401, {"detail": "bad token"})
            return None
        fault = self.server.take_fault(self.path)
        if fault == "500":
            self._json(500, {"detail": "boom"})
            return None
        if fault and fault.startswith("429:"):
            self._send(429, b'{"detail": "slow down"}', {"Retry-After": fault[4:]})
            return None
        if fault and fault.startswith("slow:"):
            time.sleep(float(fault[5:]))
        if fault == "malformed":
            self._send(200, b'{"data": [{"check_id": "x"')
            return None
        return url.path, parse_qs(url.query)

    def _location_day(self, folder, suffix: str, key: str, decode, query: dict) -> None:
        """One location-day of the sample, paged; 404 when missing, garbage when corrupt."""
        day = query.get("business_date", [""])[0]
        loc = query.get("location", [""])[0]
        file = folder / day / f"{loc}{suffix}"
        if not file.exists():
            self._json(404, {"detail": "no data"})
            return
        try:
            rows = json.loads(decode(file.read_bytes()))[key]
        except (OSError, EOFError, ValueError):
            self._send(200, file.read_bytes()[:200])  # garbage, as stored
            return
        self._paged(rows, query)

    def _document(self, file: Path) -> None:
        """A certificate as the provider serves it: an ETag, and 304 when it matches."""
        if not file.is_file():
            self._json(404, {"detail": "no such certificate"})
            return
        body = file.read_bytes()
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/pdf")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        pre = self._pre()
        if pre is None:
            return
        path, query = pre
        sample = self.server.sample
        if path in ("/sales/locations", "/timeclock/locations"):
            data = json.loads((sample / path.split("/")[1] / "locations.json").read_text())
            self._json(200, {"data": data["locations"]})
        elif path == "/sales/checks":
            self._location_day(sample / "sales", ".json.gz", "checks", gzip.decompress, query)
        elif path == "/timeclock/shifts":
            self._location_day(sample / "timeclock", ".json", "shifts", bytes, query)
        elif path == "/sales/cash-tips":
            self._location_day(sample / "sales", ".cash-tips.json", "declarations", bytes, query)
        elif path == "/roster/employees":
            data = json.loads((sample / "roster" / "employees.json").read_text())
            self._paged(data["employees"], query)
        elif path.startswith("/roster/certificates/"):
            self._document(sample / "roster" / "certificates" / path.rsplit("/", 1)[-1])
        elif path == "/invoices/vendors":
            data = json.loads((sample / "invoices" / "vendors.json").read_text())
            self._json(200, {"data": data["vendors"]})
        elif path == "/invoices/invoices":
            rows = _invoices(sample)
            since = query.get("updated_since", [None])[0]
            if since:
                cutoff = datetime.fromisoformat(since.replace("Z", "+00:00"))
                rows = [
                    r
                    for r in rows
                    if datetime.fromisoformat(r["updated_at"].replace("Z", "+00:00")) > cutoff
                ]
            self._paged(rows, query)
        else:
            self._json(404, {"detail": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        pre = self._pre()
        if pre is None:
            return
        path, _ = pre
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if path == "/accounting/payroll-files":
            name = self.headers.get("Idempotency-Key") or "unnamed"
            with self.server.lock:
                self.server.files[name] = raw
            self._json(201, {"reference": f"PAY-{name}"})
            return
        if path != "/accounting/ap-batches":
            self._json(404, {"detail": "not found"})
            return
        body = json.loads(raw or b"{}")
        key = self.headers.get("Idempotency-Key") or body.get("batch_id")
        with self.server.lock:
            self.server.batch_posts += 1
            self.server.batches[key] = body
        self._json(201, {"reference": f"AP-{key[:8]}"})


@contextmanager
def source_server(**kwargs: Any) -> Iterator[SourceServer]:
    server = SourceServer(**kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
