"""email_tips: each employee's tip statement of a transformed pay period, by email, once.

A statement is what ``transform_tips`` stored for one employee over the period
(``TipShare`` rows): per location, per day the hours, card and cash tips, and
the totals. Its identity is the SHA-256 of a canonical JSON of that data (not
of the rendered email), recorded in ``TipStatementDelivery`` once the mail
server accepted the message. A statement is compared with the latest one sent
to the employee for the period: a re-run sends nothing that already went out,
and a statement that changed (transform_tips re-run on corrected data, even
back to an earlier version) goes out again, marked as a correction. Two runs at
once cannot both send one statement: each send holds a per-statement lock
(PostgreSQL advisory lock) and checks the record again under it. What cannot
be made exactly-once is a send the server accepted right before our process
died: that one goes out again (same Message-ID) on the next run.

Mail goes through Django's email framework (``EMAIL_BACKEND``; the embedded
default writes files to ``var/outbox``), at most ``EMAIL_RATE_PER_SECOND``
messages a second. A transient failure (dropped connection, timeout, an SMTP
4xx) is retried on a new connection after ``EMAIL_BACKOFF_SECONDS`` x 2^attempt,
up to ``EMAIL_MAX_RETRIES`` times. A missing or invalid address, a recipient the
server refuses, or a send that still fails is an ``error`` naming the employee,
and the job goes on. A mail server that cannot be reached at all fails the job.

Personal data: logs name employees by id only, never an address, a name or an
amount; neither does the result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import smtplib
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from email.utils import make_msgid, parseaddr
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.validators import validate_email
from django.db import connection, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from tasks.models import TERMINAL_STATUSES, Status
from tasks.selectors import latest_run
from tasks.tracker import TaskHandle

from ..models import TipShare, TipStatementDelivery
from ..sources import SourceError, roster_source
from . import JobFailed

logger = logging.getLogger(__name__)

ZERO = Decimal("0.00")
TEMPLATES = "operations/tip_statement"


class Undeliverable(Exception):
    """This statement cannot go to this employee; the message is safe to show (no address)."""


class MailServerUnavailable(Exception):
    """No connection to the mail server could be opened: nothing else can go out either."""


@dataclass(frozen=True)
class Statement:
    """One employee's statement for the period, as plain JSON-able data."""

    employee_id: str
    employee_name: str
    data: dict[str, Any]

    @property
    def content_hash(self) -> str:
        canonical = json.dumps(self.data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _sums(rows: list[TipShare]) -> dict[str, str]:
    card = sum((r.card_tips for r in rows), ZERO)
    cash = sum((r.cash_tips for r in rows), ZERO)
    return {
        "hours": str(sum((r.hours for r in rows), ZERO)),
        "card_tips": str(card),
        "cash_tips": str(cash),
        "total": str(card + cash),
    }


def statement_data(
    employee_id: str, rows: list[TipShare], start: date, end: date
) -> dict[str, Any]:
    """Everything the statement says; its hash is the statement's identity."""
    by_location: dict[str, list[TipShare]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r.location_id, r.business_date)):
        by_location[row.location_id].append(row)
    locations = [
        {
            "location_id": location_id,
            "location_name": shares[-1].location_name,
            "days": [
                {
                    "date": r.business_date.isoformat(),
                    "job": r.job,
                    "hours": str(r.hours),
                    "card_tips": str(r.card_tips),
                    "cash_tips": str(r.cash_tips),
                    "total": str(r.card_tips + r.cash_tips),
                }
                for r in shares
            ],
            **_sums(shares),
        }
        for location_id, shares in by_location.items()
    ]
    latest = max(rows, key=lambda r: r.business_date)
    return {
        "employee_id": employee_id,
        "employee_name": latest.employee_name,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "locations": locations,
        **_sums(rows),
    }


def statements(start: date, end: date) -> list[Statement]:
    """Every employee's statement, from the shares stored for the period."""
    rows: dict[str, list[TipShare]] = defaultdict(list)
    for row in TipShare.objects.filter(business_date__range=(start, end)):
        rows[row.employee_id].append(row)
    out = []
    for employee_id in sorted(rows):
        data = statement_data(employee_id, rows[employee_id], start, end)
        out.append(Statement(employee_id, data["employee_name"], data))
    return out


def build_message(statement: Statement, address: str, correction: bool) -> EmailMultiAlternatives:
    """Plain text and HTML from the templates; our own Message-ID, kept across retries."""
    context = {"s": statement.data, "correction": correction}
    subject = " ".join(render_to_string(f"{TEMPLATES}_subject.txt", context).split())
    message = EmailMultiAlternatives(
        subject,
        render_to_string(f"{TEMPLATES}.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[address],
        headers={
            "Message-ID": make_msgid(
                domain=parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "localhost"
            )
        },
    )
    message.attach_alternative(render_to_string(f"{TEMPLATES}.html", context), "text/html")
    return message


def is_transient(exc: BaseException) -> bool:
    """Worth another try on a new connection: a dropped connection, a timeout, an SMTP 4xx."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(400 <= code < 500 for code in codes)
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return isinstance(exc, smtplib.SMTPServerDisconnected | ConnectionError | TimeoutError)


def refusal(exc: BaseException) -> str:
    """Why the server said no, by code only: its text often repeats the address."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in exc.recipients.values()})
        return f"the mail server refused the address ({', '.join(map(str, codes))})"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the mail server refused the message ({exc.smtp_code})"
    return f"not delivered ({exc.__class__.__name__})"


class Mailer:
    """One backend connection, re-opened after a transient failure; paced and retried."""

    def __init__(self) -> None:
        rate = float(settings.EMAIL_RATE_PER_SECOND)
        self.interval = 1 / rate if rate > 0 else 0.0
        self.retries = max(int(settings.EMAIL_MAX_RETRIES), 0)
        self.backoff = float(settings.EMAIL_BACKOFF_SECONDS)
        self.connection: Any = None
        self.next_send = 0.0

    def _open(self) -> Any:
        if self.connection is None:
            candidate = get_connection(fail_silently=False)
            candidate.open()
            self.connection = candidate
        return self.connection

    def _pace(self) -> None:
        wait = self.next_send - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.next_send = time.monotonic() + self.interval

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # a dead connection may fail to say goodbye; it is gone anyway
                pass
            self.connection = None

    def send(self, message: EmailMultiAlternatives) -> None:
        """Deliver or raise: Undeliverable for this message, MailServerUnavailable for all."""
        for attempt in range(self.retries + 1):
            self._pace()
            opening = self.connection is None
            try:
                message.connection = self._open()
                opening = False
                message.send()
                return
            except (smtplib.SMTPException, OSError) as exc:
                transient = is_transient(exc)
                self.close()
                if attempt < self.retries and (transient or opening):
                    time.sleep(self.backoff * 2**attempt)
                    continue
                if opening:
                    raise MailServerUnavailable(
                        f"{exc.__class__.__name__} after {attempt + 1} attempt(s)"
                    ) from exc
                if transient:
                    raise Undeliverable(
                        f"not delivered after {attempt + 1} attempts ({refusal(exc)})"
                    ) from exc
                if isinstance(exc, smtplib.SMTPException):
                    raise Undeliverable(refusal(exc)) from exc
                raise


@contextmanager
def statement_lock(employee_id: str, start: date, end: date) -> Iterator[None]:
    """One run at a time sends a given employee's statement (released at commit)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            digest = hashlib.sha256(f"tip-statement:{employee_id}:{start}:{end}".encode())
            key = int.from_bytes(digest.digest()[:8], "big", signed=True)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
        yield


def address_of(employee: dict[str, Any] | None) -> str:
    """The roster's address for the employee, or Undeliverable saying what is wrong."""
    if employee is None:
        raise Undeliverable("not on the roster")
    address = str(employee.get("email") or "").strip()
    if not address:
        raise Undeliverable("no email address on the roster")
    try:
        validate_email(address)
    except ValidationError as exc:
        raise Undeliverable("invalid email address on the roster") from exc
    return address


def deliver(
    statement: Statement,
    employee: dict[str, Any] | None,
    mailer: Mailer,
    start: date,
    end: date,
    task_id: str,
) -> str:
    """``sent``, ``correction`` or ``unchanged``; Undeliverable when it cannot go out."""
    digest = statement.content_hash
    with statement_lock(statement.employee_id, start, end):
        # Only the latest send counts: after A -> B -> A the employee holds B, so A goes
        # out again. Sends of one statement are serialised by the lock: the highest pk is
        # the last one (sent_at could step back with the clock).
        latest = (
            TipStatementDelivery.objects.filter(
                employee_id=statement.employee_id, period_start=start, period_end=end
            )
            .order_by("-pk")
            .values_list("content_hash", flat=True)
            .first()
        )
        if latest == digest:
            return "unchanged"
        correction = latest is not None
        address = address_of(employee)
        message = build_message(statement, address, correction)
        mailer.send(message)
        TipStatementDelivery.objects.create(
            employee_id=statement.employee_id,
            period_start=start,
            period_end=end,
            content_hash=digest,
            email=address,
            correction=correction,
            message_id=message.extra_headers["Message-ID"],
            task_id=task_id,
            sent_at=timezone.now(),
        )
    logger.info(
        "tip statement %s..%s sent to employee %s%s",
        start,
        end,
        statement.employee_id,
        " (correction)" if correction else "",
    )
    return "correction" if correction else "sent"


def _require_a_finished_transformation(start: date, end: date) -> None:
    """Statements go out from a transformation that has finished, never from one midway
    (its shares are being replaced) or one that failed (they may be partial). With no
    run on record (purged after its TTL) the stored shares stand on their own."""
    period = f"{start.isoformat()}..{end.isoformat()}"
    last = latest_run("transform_tips", period_start=start.isoformat(), period_end=end.isoformat())
    if last is None:
        return
    if last.status not in TERMINAL_STATUSES:
        raise JobFailed(
            f"transform_tips for {period} is still running (task {last.task_id}); "
            "statements go out once it has finished"
        )
    if last.status == Status.FAILED:
        raise JobFailed(
            f"the last transform_tips for {period} failed (task {last.task_id}); "
            "statements go out after a run that finishes"
        )


def run(task: TaskHandle, params: dict[str, Any]) -> dict[str, Any]:
    """Send every statement of the period that has not gone out in its current form."""
    start: date = params["period_start"]
    end: date = params["period_end"]
    period = f"{start.isoformat()}..{end.isoformat()}"
    _require_a_finished_transformation(start, end)
    todo = statements(start, end)
    if not todo:
        raise JobFailed(f"pay period {period} has not been transformed; run transform_tips first")
    try:
        roster = {
            str(e.get("employee_id")): e
            for e in roster_source().list_employees()
            if isinstance(e, dict)
        }
    except SourceError as exc:
        raise JobFailed(f"roster source unusable: {exc}") from exc
    total = len(todo)
    task.progress(0, f"{period}: 0 of {total} statements", total=total)
    counts = dict.fromkeys(("sent", "correction", "unchanged", "failed"), 0)
    mailer = Mailer()
    try:
        for i, statement in enumerate(todo, 1):
            try:
                counts[
                    deliver(
                        statement,
                        roster.get(statement.employee_id),
                        mailer,
                        start,
                        end,
                        task.task_id,
                    )
                ] += 1
            except Undeliverable as exc:
                counts["failed"] += 1
                logger.warning(
                    "tip statement %s not sent to employee %s: %s",
                    period,
                    statement.employee_id,
                    exc,
                )
                task.error(f"employee {statement.employee_id} ({statement.employee_name}): {exc}")
            except MailServerUnavailable as exc:
                raise JobFailed(
                    f"mail server unavailable ({exc}); {counts['sent']} sent and "
                    f"{counts['correction']} corrections before it failed; "
                    "re-run to send the rest"
                ) from exc
            task.progress(i, f"{period}: {i} of {total} statements")
    finally:
        mailer.close()
    return {
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "statements": total,
        "sent": counts["sent"] + counts["correction"],
        "corrections": counts["correction"],
        "skipped_unchanged": counts["unchanged"],
        "failed": counts["failed"],
    }
