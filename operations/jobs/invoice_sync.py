"""invoice_sync: invoices changed since the watermark -> validated, upserted, exported.

Each invoice is validated (required fields, known vendor, lines + tax = total
within a cent, sane dates, no negative quantity except on a credit memo) and
upserted on (vendor, invoice number). A content hash skips unchanged invoices.
New and changed valid invoices are then claimed into one AP batch and sent to
the accounting target. The claim is a row per (invoice, content hash) under a
unique constraint, so two syncs at once can never export one version twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from tasks.tracker import TaskHandle

from ..models import AccountingExport, AccountingExportLine, Invoice, SyncWatermark
from ..sources import SourceError, accounting_target, invoice_source
from ..sources.files import parse_timestamp
from . import JobFailed
from .numbers import finite_decimal

logger = logging.getLogger(__name__)

CENT = Decimal("0.01")
DOCUMENT_TYPES = ("invoice", "credit_memo")
EARLIEST = date(2000, 1, 1)


class InvalidInvoice(ValueError):
    pass


def invoice_label(raw: Any) -> str:
    if not isinstance(raw, dict):
        return "invoice (not an object)"
    return f"invoice {raw.get('vendor_id') or '?'}/{raw.get('invoice_number') or '(no number)'}"


def _decimal(value: Any, field: str) -> Decimal:
    if value is None or value == "" or isinstance(value, bool):
        raise InvalidInvoice(f"{field} is missing")
    result = finite_decimal(value)
    if result is None:
        raise InvalidInvoice(f"{field} is not a number ({value!r})")
    return result


def _date(value: Any, field: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise InvalidInvoice(f"{field} {value!r} is not a date") from exc


def validate_invoice(raw: Any, *, vendors: set[str], today: date) -> dict[str, Any]:
    """The normalised invoice, or InvalidInvoice with the first reason it is wrong."""
    if not isinstance(raw, dict):
        raise InvalidInvoice("not an object")
    for field in ("vendor_id", "invoice_number", "invoice_date", "total"):
        if raw.get(field) in (None, ""):
            raise InvalidInvoice(f"required field {field} is missing")
    vendor = str(raw["vendor_id"])
    if vendor not in vendors:
        raise InvalidInvoice(f"unknown vendor {vendor}")
    doc_type = raw.get("document_type") or "invoice"
    if doc_type not in DOCUMENT_TYPES:
        raise InvalidInvoice(f"document_type {doc_type!r} is not one of {DOCUMENT_TYPES}")
    invoice_date = _date(raw["invoice_date"], "invoice_date")
    if invoice_date < EARLIEST or invoice_date > today + timedelta(days=1):
        raise InvalidInvoice(f"invoice_date {invoice_date} is not a plausible date")
    due_date = _date(raw["due_date"], "due_date") if raw.get("due_date") else None
    if due_date and due_date < invoice_date:
        raise InvalidInvoice(f"due_date {due_date} is before invoice_date {invoice_date}")
    raw_lines = raw.get("lines")
    if not isinstance(raw_lines, list) or not raw_lines:
        raise InvalidInvoice("has no lines")
    lines = []
    line_sum = Decimal(0)
    for n, line in enumerate(raw_lines, 1):
        if not isinstance(line, dict):
            raise InvalidInvoice(f"line {n} is not an object")
        qty = _decimal(line.get("qty"), f"line {n} qty")
        price = _decimal(line.get("unit_price"), f"line {n} unit_price")
        amount = (
            _decimal(line["amount"], f"line {n} amount")
            if line.get("amount") not in (None, "")
            else qty * price
        )
        if qty < 0 and doc_type != "credit_memo":
            raise InvalidInvoice(f"line {n} has negative quantity {qty} and is not a credit memo")
        if abs(qty * price - amount) > CENT:
            raise InvalidInvoice(
                f"line {n} amount {amount} is not qty x unit_price ({(qty * price).quantize(CENT)})"
            )
        line_sum += amount
        lines.append(
            {
                "line_no": int(_decimal(line.get("line_no", n), f"line {n} line_no")),
                "sku": str(line.get("sku") or ""),
                "description": str(line.get("description") or ""),
                "qty": str(qty.normalize()),
                "unit_price": str(price.quantize(CENT)),
                "amount": str(amount.quantize(CENT)),
            }
        )
    tax = _decimal(raw.get("tax", 0) if raw.get("tax") not in (None, "") else 0, "tax")
    total = _decimal(raw["total"], "total")
    if abs(line_sum + tax - total) > CENT:
        raise InvalidInvoice(
            f"lines {line_sum.quantize(CENT)} + tax {tax.quantize(CENT)} "
            f"= {(line_sum + tax).quantize(CENT)}, not the total "
            f"{total.quantize(CENT)}"
        )
    try:
        updated_at = parse_timestamp(raw["updated_at"]) if raw.get("updated_at") else None
    except ValueError as exc:
        raise InvalidInvoice(f"updated_at {raw.get('updated_at')!r} is not a timestamp") from exc
    return {
        "vendor_id": vendor,
        "invoice_number": str(raw["invoice_number"]),
        "document_type": doc_type,
        "invoice_date": invoice_date,
        "due_date": due_date,
        "location_id": str(raw.get("location_id") or ""),
        "currency": str(raw.get("currency") or "USD")[:3],
        "subtotal": line_sum.quantize(CENT),
        "tax": tax.quantize(CENT),
        "total": total.quantize(CENT),
        "lines": lines,
        "source_updated_at": updated_at,
    }


def content_hash(invoice: dict[str, Any]) -> str:
    """What makes a version: everything but the source's own change timestamp."""
    body = {k: v for k, v in invoice.items() if k != "source_updated_at"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def upsert_invoice(data: dict[str, Any]) -> str:
    """``created``, ``updated`` or ``unchanged``; safe against a concurrent sync."""
    digest = content_hash(data)
    key = {"vendor_id": data["vendor_id"], "invoice_number": data["invoice_number"]}
    fields = {k: v for k, v in data.items() if k not in key}
    for _ in range(2):
        with transaction.atomic():
            existing = Invoice.objects.select_for_update().filter(**key).first()
            if existing is None:
                try:
                    with transaction.atomic():
                        Invoice.objects.create(**key, **fields, content_hash=digest)
                    return "created"
                except IntegrityError:
                    continue  # a concurrent sync created it first: look again
            if existing.content_hash == digest:
                return "unchanged"
            for name, value in fields.items():
                setattr(existing, name, value)
            existing.content_hash = digest
            existing.save()
            return "updated"
    return "unchanged"


def watermark_name() -> str:
    return "invoice_sync:" + hashlib.sha1(settings.INVOICE_SOURCE_URL.encode()).hexdigest()[:12]


def read_watermark() -> datetime | None:
    row = SyncWatermark.objects.filter(name=watermark_name()).first()
    return row.value if row else None


def advance_watermark(value: datetime) -> None:
    """Only forwards: a slower concurrent sync cannot move it back."""
    with transaction.atomic():
        row, _ = SyncWatermark.objects.select_for_update().get_or_create(name=watermark_name())
        if row.value is None or value > row.value:
            row.value = value
            row.save()


def _invoice_payload(inv: Invoice) -> dict[str, Any]:
    return {
        "vendor_id": inv.vendor_id,
        "invoice_number": inv.invoice_number,
        "document_type": inv.document_type,
        "invoice_date": inv.invoice_date.isoformat(),
        "due_date": inv.due_date.isoformat() if inv.due_date else None,
        "location_id": inv.location_id,
        "currency": inv.currency,
        "subtotal": str(inv.subtotal),
        "tax": str(inv.tax),
        "total": str(inv.total),
        "lines": inv.lines,
        "content_hash": inv.content_hash,
    }


def claim_pending(task_id: str) -> AccountingExport | None:
    """Claim every valid invoice version not yet exported into a new pending batch."""
    with transaction.atomic():
        pending = list(
            Invoice.objects.select_for_update(skip_locked=True)
            .exclude(exported_hash=F("content_hash"))
            .exclude(exports__content_hash=F("content_hash"))
            .order_by("pk")
        )
        if not pending:
            return None
        batch = AccountingExport.objects.create(task_id=task_id)
        claimed = 0
        for inv in pending:
            try:
                with transaction.atomic():
                    AccountingExportLine.objects.create(
                        batch=batch, invoice=inv, content_hash=inv.content_hash
                    )
                claimed += 1
            except IntegrityError:
                continue  # another sync claimed this version first
        if not claimed:
            batch.delete()
            return None
        batch.invoice_count = claimed
        batch.save(update_fields=["invoice_count"])
        return batch


def send_batch(batch: AccountingExport) -> int:
    """Deliver a claimed batch; on failure release its claims so the next sync retries."""
    lines = list(batch.lines.select_related("invoice").order_by("pk"))
    payload = {
        "batch_id": str(batch.batch_id),
        "created_at": batch.created_at.isoformat(),
        "invoices": [
            {**_invoice_payload(line.invoice), "content_hash": line.content_hash} for line in lines
        ],
    }
    try:
        reference = accounting_target().send_batch(str(batch.batch_id), payload)
    except SourceError as exc:
        with transaction.atomic():
            batch.lines.all().delete()
            AccountingExport.objects.filter(pk=batch.pk).update(
                state=AccountingExport.State.FAILED, error=str(exc)[:2000]
            )
        raise
    with transaction.atomic():
        AccountingExport.objects.filter(pk=batch.pk).update(
            state=AccountingExport.State.SENT, reference=reference[:200], sent_at=timezone.now()
        )
        for line in lines:
            Invoice.objects.filter(pk=line.invoice_id, content_hash=line.content_hash).update(
                exported_hash=line.content_hash
            )
    return len(lines)


def resend_stale_batches() -> int:
    """A sync that died between claim and send left a pending batch: send it again
    (same batch id, so the target can deduplicate)."""
    cutoff = timezone.now() - timedelta(seconds=settings.JOB_MAX_SECONDS * 2)
    sent = 0
    for batch in AccountingExport.objects.filter(
        state=AccountingExport.State.PENDING, created_at__lt=cutoff
    ):
        sent += send_batch(batch)
    return sent


def run(task: TaskHandle, params: dict[str, Any]) -> dict[str, Any]:
    """Sync changed invoices and export the new and changed ones; bad invoices are errors."""
    source = invoice_source()
    since = None if params.get("full") else (params.get("updated_since") or read_watermark())
    try:
        vendors = {str(v["id"]) for v in source.list_vendors() if isinstance(v, dict)}
        invoices = list(source.iter_invoices(since))
    except (SourceError, KeyError) as exc:
        raise JobFailed(f"invoice source unusable: {exc}") from exc
    total = len(invoices) + 1  # + the export step
    task.progress(
        0, f"{len(invoices)} invoice(s) changed since {since or 'the beginning'}", total=total
    )
    counts = {"created": 0, "updated": 0, "unchanged": 0, "invalid": 0, "exported": 0}
    invalid: list[str] = []
    newest = since
    today = timezone.localdate()
    for i, raw in enumerate(invoices, 1):
        label = invoice_label(raw)
        try:
            data = validate_invoice(raw, vendors=vendors, today=today)
        except InvalidInvoice as exc:
            counts["invalid"] += 1
            invalid.append(f"{label}: {exc}")
            task.error(f"{label}: {exc}")
        else:
            counts[upsert_invoice(data)] += 1
            stamp = data["source_updated_at"]
            if stamp and (newest is None or stamp > newest):
                newest = stamp
        if isinstance(raw, dict) and raw.get("updated_at"):
            try:
                stamp = parse_timestamp(raw["updated_at"])
                newest = stamp if newest is None or stamp > newest else newest
            except ValueError:
                pass
        # The bar says "i/N+1" (the export is the last step), so the message
        # names the invoice only rather than a second, different count.
        task.progress(i, f"checked {label}")
    if invoices:
        task.progress(len(invoices), "exporting to accounting")
    batch_id = None
    try:
        counts["exported"] += resend_stale_batches()
        batch = claim_pending(task.task_id)
        if batch is not None:
            batch_id = str(batch.batch_id)
            counts["exported"] += send_batch(batch)
    except SourceError as exc:
        task.error(f"accounting export failed, will retry on the next sync: {exc}")
        batch_id = None
    if newest is not None:
        advance_watermark(newest)
    task.progress(total, f"exported {counts['exported']} invoice(s)")
    return {
        **counts,
        "batch_id": batch_id,
        "invalid_invoices": invalid[:100],
        "watermark": newest.isoformat() if newest else None,
    }
