"""The connectors: the file exports and the HTTP API (against a real loopback server)."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import pytest

from operations.sources import DataNotFound, SourceError, connect
from operations.sources.files import FileConnector
from operations.sources.http import HttpConnector
from tests.support.source_server import SAMPLE, source_server

DAY = date(2025, 6, 3)


def raw_checks(day: date, location: str) -> list[dict]:
    path = SAMPLE / "sales" / day.isoformat() / f"{location}.json.gz"
    return json.loads(gzip.decompress(path.read_bytes()))["checks"]


@pytest.fixture
def server():
    with source_server() as srv:
        yield srv


def http(base: str, *, sleeps: list[float] | None = None, **settings_kw) -> HttpConnector:
    record = sleeps if sleeps is not None else []
    connector = HttpConnector(base, token="test-token", sleep=record.append)
    for key, value in settings_kw.items():
        setattr(connector, key, value)
    return connector


def test_file_source_reads_a_location_day():
    source = connect(f"file://{SAMPLE / 'sales'}")
    assert source.fetch_checks(DAY, "L01") == raw_checks(DAY, "L01")
    assert len(source.list_locations()) == 12


def test_file_source_reports_the_corrupt_and_the_missing_file():
    source = FileConnector(f"file://{SAMPLE / 'sales'}")
    with pytest.raises(SourceError, match="L07.json.gz is corrupt"):
        source.fetch_checks(date(2025, 6, 10), "L07")
    with pytest.raises(DataNotFound):
        source.fetch_checks(date(2025, 6, 13), "L11")


def test_file_source_groups_csv_lines_into_invoices():
    invoices = list(FileConnector(f"file://{SAMPLE / 'invoices'}").iter_invoices(None))
    csv_rows = (SAMPLE / "invoices" / "invoices_V12.csv").read_text().splitlines()[1:]
    from_csv = [i for i in invoices if i["vendor_id"] == "V12"]
    assert sum(len(i["lines"]) for i in from_csv) == len(csv_rows)
    assert len(invoices) == 320


def test_missing_directory_and_bad_scheme_are_source_errors(tmp_path: Path):
    with pytest.raises(SourceError, match="does not exist"):
        connect(f"file://{tmp_path / 'nowhere'}").list_locations()
    with pytest.raises(SourceError, match="unsupported source URL"):
        connect("ftp://example.invalid/x")


def test_http_source_pages_through_every_check(server):
    source = http(f"{server.base}/sales", page_size=100)
    checks = source.fetch_checks(DAY, "L09")
    assert checks == raw_checks(DAY, "L09")
    pages = [p for m, p in server.requests if "checks" in p]
    assert len(pages) == len(checks) // 100 + 1


def test_http_source_retries_500_and_honours_retry_after(server):
    sleeps: list[float] = []
    source = http(f"{server.base}/sales", sleeps=sleeps)
    server.fail("/sales/locations", "500")
    server.fail("/sales/locations", "429:7")
    assert len(source.list_locations()) == 12
    assert len(sleeps) == 2
    assert sleeps[1] == 7.0  # Retry-After, not the backoff
    assert sleeps[0] < 1.0


def test_http_source_retries_a_slow_answer_after_its_timeout(server):
    sleeps: list[float] = []
    source = http(f"{server.base}/sales", sleeps=sleeps, timeout=(1.0, 0.5))
    server.fail("/sales/locations", "slow:1.5")
    assert len(source.list_locations()) == 12
    assert len(sleeps) == 1


def test_http_source_malformed_page_is_a_source_error(server):
    source = http(f"{server.base}/sales", page_size=100)
    server.fail("page=3", "malformed")
    with pytest.raises(SourceError, match="malformed response"):
        source.fetch_checks(DAY, "L01")


def test_http_source_gives_up_after_its_retries(server):
    sleeps: list[float] = []
    source = http(f"{server.base}/sales", sleeps=sleeps, max_retries=2)
    for _ in range(3):
        server.fail("/sales/locations", "500")
    with pytest.raises(SourceError, match="HTTP 500 \\(gave up after 3 attempts\\)"):
        source.list_locations()
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0]


def test_http_source_bad_token_and_unreachable_host(server):
    bad = HttpConnector(f"{server.base}/sales", token="wrong", sleep=lambda s: None)
    with pytest.raises(SourceError, match="credentials refused"):
        bad.list_locations()
    gone = HttpConnector("http://127.0.0.1:9/sales", token="t", sleep=lambda s: None)
    with pytest.raises(SourceError, match="unreachable"):
        gone.list_locations()


def test_http_source_missing_location_day_is_not_found(server):
    with pytest.raises(DataNotFound):
        http(f"{server.base}/sales").fetch_checks(date(2025, 6, 13), "L11")
    with pytest.raises(SourceError, match="malformed"):
        http(f"{server.base}/sales").fetch_checks(date(2025, 6, 10), "L07")


def test_a_document_reference_that_is_no_usable_url_is_a_source_error(server):
    files = FileConnector(f"file://{SAMPLE / 'roster'}")
    with pytest.raises(SourceError, match="not a usable path"):
        files.fetch_document("certificates/%00.pdf")
    with pytest.raises(SourceError, match="not a valid URL"):
        http(f"{server.base}/roster").fetch_document("http://[x/cert.pdf")
