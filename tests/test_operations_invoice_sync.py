"""invoice_sync on the sample data: counts computed independently, idempotence, no double
export even with two syncs at once."""

from __future__ import annotations

import csv
import json
import shutil
import threading
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from django.db import connection

from operations.models import AccountingExport, Invoice
from tests.support.jobs import run_job
from tests.support.source_server import SAMPLE, source_server

pytestmark = pytest.mark.django_db(transaction=True)


def raw_invoices(folder: Path = SAMPLE / "invoices") -> list[dict]:
    invoices = json.loads((folder / "invoices.json").read_text())["invoices"]
    grouped: dict[tuple, dict] = {}
    with (folder / "invoices_V12.csv").open() as fh:
        for row in csv.DictReader(fh):
            key = (row["vendor_id"], row["invoice_number"])
            head = grouped.setdefault(key, {**row, "lines": []})
            head["lines"].append(
                {"qty": row["qty"], "unit_price": row["unit_price"], "amount": row["amount"]}
            )
    return invoices + list(grouped.values())


def is_valid(inv: dict, vendors: set[str]) -> bool:
    """The rules of the issue, written out again in cents."""
    if not inv.get("invoice_number") or inv["vendor_id"] not in vendors:
        return False
    credit = inv.get("document_type") == "credit_memo"
    amounts = 0
    for line in inv["lines"]:
        qty = float(line["qty"])
        if qty < 0 and not credit:
            return False
        amount = round(float(line["amount"]) * 100)
        if abs(round(qty * float(line["unit_price"]) * 100) - amount) > 1:
            return False
        amounts += amount
    if abs(amounts + round(float(inv["tax"]) * 100) - round(float(inv["total"]) * 100)) > 1:
        return False
    return inv.get("due_date", "9") >= inv["invoice_date"] > "2000"


def vendor_ids(folder: Path = SAMPLE / "invoices") -> set[str]:
    return {v["id"] for v in json.loads((folder / "vendors.json").read_text())["vendors"]}


def exported_keys(target: Path) -> Counter:
    keys: Counter = Counter()
    for path in target.glob("ap-batch-*.json"):
        for inv in json.loads(path.read_text())["invoices"]:
            keys[(inv["vendor_id"], inv["invoice_number"], inv["content_hash"])] += 1
    return keys


def test_first_sync_counts_match_the_raw_invoices(sample_sources):
    raw = raw_invoices()
    valid = [i for i in raw if is_valid(i, vendor_ids())]
    task = run_job("invoice_sync")
    assert task.status == "completed_with_errors"
    result = task.result
    assert result["created"] == len(valid) == Invoice.objects.count()
    assert result["invalid"] == len(raw) - len(valid) > 10
    assert result["exported"] == len(valid)
    assert result["updated"] == result["unchanged"] == 0
    keys = exported_keys(sample_sources)
    assert len(keys) == len(valid) and set(keys.values()) == {1}
    stored = sum(Invoice.objects.values_list("total", flat=True))
    assert round(stored * 100) == sum(round(float(i["total"]) * 100) for i in valid)
    # one step per invoice and one for the export; the bar ends full
    assert (task.progress_current, task.progress_total) == (len(raw) + 1, len(raw) + 1)
    assert task.progress_message == f"exported {len(valid)} invoice(s)"


def test_second_sync_reads_nothing_and_full_resync_changes_nothing(sample_sources):
    run_job("invoice_sync")
    again = run_job("invoice_sync")
    assert again.status == "completed"
    assert again.result["created"] == again.result["exported"] == 0
    full = run_job("invoice_sync", {"full": True})
    assert full.result["unchanged"] == Invoice.objects.count()
    assert full.result["created"] == full.result["updated"] == full.result["exported"] == 0
    assert AccountingExport.objects.count() == 1


def test_changed_invoice_is_updated_and_exported_once_more(settings, sample_sources, tmp_path):
    folder = tmp_path / "invoices"
    shutil.copytree(SAMPLE / "invoices", folder)
    settings.INVOICE_SOURCE_URL = f"file://{folder}"
    run_job("invoice_sync")
    data = json.loads((folder / "invoices.json").read_text())
    target = next(i for i in data["invoices"] if is_valid(i, vendor_ids(folder)))
    target["lines"][0]["description"] += " (substituted)"
    target["updated_at"] = "2025-07-01T00:00:00Z"
    (folder / "invoices.json").write_text(json.dumps(data))
    task = run_job("invoice_sync")
    assert task.result["updated"] == 1 and task.result["exported"] == 1
    assert task.result["created"] == task.result["unchanged"] == 0
    assert task.result["watermark"].startswith("2025-07-01")
    keys = exported_keys(sample_sources)
    assert sum(1 for k in keys if k[:2] == (target["vendor_id"], target["invoice_number"])) == 2


def test_two_syncs_at_once_never_export_an_invoice_twice(sample_sources):
    assert connection.vendor == "postgresql", "this race needs real row locks"
    results: list = []

    def sync() -> None:
        try:
            results.append(run_job("invoice_sync", {"full": True}))
        finally:
            connection.close()

    threads = [threading.Thread(target=sync) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    valid = [i for i in raw_invoices() if is_valid(i, vendor_ids())]
    keys = exported_keys(sample_sources)
    assert len(keys) == len(valid) and set(keys.values()) == {1}
    assert sum(r.result["exported"] for r in results) == len(valid)
    assert sum(r.result["created"] for r in results) == len(valid)
    assert all(r.status == "completed_with_errors" for r in results)


def test_export_over_http_retries_and_failed_export_is_retried_next_sync(settings, sample_sources):
    settings.SOURCE_TOKEN = "test-token"
    settings.SOURCE_BACKOFF_SECONDS = 0.01
    settings.SOURCE_MAX_RETRIES = 1
    with source_server() as server:
        settings.INVOICE_SOURCE_URL = f"{server.base}/invoices"
        settings.ACCOUNTING_TARGET_URL = f"{server.base}/accounting"
        server.fail("ap-batches", "500")
        server.fail("ap-batches", "500")
        first = run_job("invoice_sync")
        assert first.result["exported"] == 0
        assert "accounting export failed" in first.error
        second = run_job("invoice_sync")
        assert second.result["created"] == 0
        assert second.result["exported"] == first.result["created"]
        server.fail("ap-batches", "500")
        assert run_job("invoice_sync").result["exported"] == 0  # nothing left to send
    sent = [inv for batch in server.batches.values() for inv in batch["invoices"]]
    assert len(sent) == len({(i["vendor_id"], i["invoice_number"]) for i in sent})
    assert len(sent) == first.result["created"]


def test_invoice_with_future_date_is_invalid():
    from operations.jobs.invoice_sync import InvalidInvoice, validate_invoice

    inv = {
        "vendor_id": "V01",
        "invoice_number": "A1",
        "invoice_date": "2031-01-01",
        "total": 1,
        "tax": 0,
        "lines": [{"qty": 1, "unit_price": 1, "amount": 1}],
    }
    with pytest.raises(InvalidInvoice, match="not a plausible date"):
        validate_invoice(inv, vendors={"V01"}, today=date(2025, 6, 1))
