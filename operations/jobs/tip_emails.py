"""email_tips: each employee's tip statement of a transformed pay period, by email, once.

What a statement says is ``tip_statements``. Which periods may be stated: a
pay period of the tip policy (``tip_policy.PayPeriods``), over, not overlapping
a period already stated, whose last ``transform_tips`` has finished.

At most once per content, across a crash: the send is written down first
(``TipStatementDelivery`` ``intended``, with its Message-ID), then the mail goes
to the server, then the row is marked ``sent``. A statement is compared with the
latest one stated to the employee for the period: a re-run sends nothing that
already went out, a statement that changed goes out again, marked as a
correction, and an intent a crash left unconfirmed is sent once more with the
same Message-ID (SMTP cannot tell us whether the server accepted a message whose
reply we never read; the same Message-ID lets mail clients fold the two into one).
Two runs at once cannot both send one statement: each send holds a
per-statement PostgreSQL advisory lock and reads the record again under it.

Mail goes through Django's email framework (``EMAIL_BACKEND``; the embedded
default writes files to ``var/outbox``), at most ``EMAIL_RATE_PER_SECOND``
messages a second. A transient failure (dropped connection, timeout, an SMTP
4xx) is retried on a new connection after ``EMAIL_BACKOFF_SECONDS`` x 2^attempt,
up to ``EMAIL_MAX_RETRIES`` times. A missing, invalid or over-long address, a
recipient the server refuses, or a send that still fails is an ``error`` naming
the employee, and the job goes on. A mail server that cannot be reached at all
fails the job.

Personal data: logs name employees by id only, never an address, a name or an
amount; neither does the result.
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.validators import validate_email
from django.db import DatabaseError, connection
from django.db.models import Q
from django.utils import timezone

from tasks.models import TERMINAL_STATUSES, Status, TaskStatus
from tasks.selectors import latest_run
from tasks.tracker import TaskHandle

from ..models import TipShare, TipStatementDelivery
from ..sources import SourceError, roster_source
from . import JobFailed
from .columns import max_length
from .tip_policy import PolicyFileError, load_policies
from .tip_statements import STATED, Statement, build_message, message_id, statements

logger = logging.getLogger(__name__)

MAX_EMAIL = max_length(TipStatementDelivery, "email")


class Undeliverable(Exception):
    """This statement cannot go to this employee; the message is safe to show (no address)."""


class MailServerUnavailable(Exception):
    """No connection to the mail server could be opened: nothing else can go out either."""


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
    """One run at a time sends a given employee's statement. A session lock, not a
    transaction's: the intent must be committed before the send. A process that dies
    drops its connection and with it the lock."""
    if connection.vendor != "postgresql":
        yield
        return
    digest = hashlib.sha256(f"tip-statement:{employee_id}:{start}:{end}".encode())
    key = int.from_bytes(digest.digest()[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        except DatabaseError:  # the connection is gone, and the lock with it
            logger.warning("tip statement lock of employee %s not released", employee_id)


def address_of(employee: dict[str, Any] | None) -> str:
    """The roster's address for the employee, or Undeliverable saying what is wrong."""
    if employee is None:
        raise Undeliverable("not on the roster")
    address = str(employee.get("email") or "").strip()
    if not address:
        raise Undeliverable("no email address on the roster")
    if len(address) > MAX_EMAIL:
        raise Undeliverable(f"email address on the roster longer than {MAX_EMAIL} characters")
    try:
        validate_email(address)
    except ValidationError as exc:
        raise Undeliverable("invalid email address on the roster") from exc
    return address


def _intent(
    statement: Statement, employee: dict[str, Any] | None, start: date, end: date, task_id: str
) -> tuple[TipStatementDelivery | None, str]:
    """The row to send (written ``intended`` before the send) and what it is: ``sent`` or
    ``correction`` for a new one, ``resent`` for an intent a crash left unconfirmed,
    ``unchanged`` (no row) when the latest statement sent is this one."""
    history = TipStatementDelivery.objects.filter(
        employee_id=statement.employee_id, period_start=start, period_end=end
    )
    # Sends of one statement are serialised by the lock: the highest pk is the last one.
    latest = history.filter(state__in=STATED).order_by("-pk").first()
    digest = statement.content_hash
    if latest is not None and latest.content_hash == digest:
        if latest.state == TipStatementDelivery.State.SENT:
            return None, "unchanged"
        return latest, "resent"
    address = address_of(employee)
    correction = latest is not None
    intent = TipStatementDelivery.objects.create(
        employee_id=statement.employee_id,
        period_start=start,
        period_end=end,
        content_hash=digest,
        email=address,
        correction=correction,
        message_id=message_id(statement, start, end, history.count()),
        task_id=task_id,
        state=TipStatementDelivery.State.INTENDED,
        intended_at=timezone.now(),
    )
    return intent, "correction" if correction else "sent"


def deliver(
    statement: Statement,
    employee: dict[str, Any] | None,
    mailer: Mailer,
    start: date,
    end: date,
    task_id: str,
) -> str:
    """``sent``, ``correction``, ``resent`` or ``unchanged``; Undeliverable when it cannot
    go out. The intent is on record before the server sees the message."""
    with statement_lock(statement.employee_id, start, end):
        intent, outcome = _intent(statement, employee, start, end, task_id)
        if intent is None:
            return outcome
        message = build_message(statement, intent.email, intent.correction, intent.message_id)
        try:
            mailer.send(message)
        except (Undeliverable, MailServerUnavailable):
            intent.state = TipStatementDelivery.State.NOT_SENT
            intent.save(update_fields=["state"])
            raise
        intent.state = TipStatementDelivery.State.SENT
        intent.sent_at = timezone.now()
        intent.save(update_fields=["state", "sent_at"])
    logger.info(
        "tip statement %s..%s sent to employee %s%s",
        start,
        end,
        statement.employee_id,
        {"correction": " (correction)", "resent": " (again, after an interrupted send)"}.get(
            outcome, ""
        ),
    )
    return outcome


def _require_a_pay_period(start: date, end: date) -> None:
    """Only a whole pay period of the policy, once: a period cut differently, or one that
    overlaps a period already stated, would state the same money twice."""
    period = f"{start.isoformat()}..{end.isoformat()}"
    if end >= timezone.localdate():
        raise JobFailed(f"pay period {period} is not over yet")
    try:
        pay_periods = load_policies().pay_periods
    except PolicyFileError as exc:
        raise JobFailed(str(exc)) from exc
    if not pay_periods.is_period(start, end):
        first, last = pay_periods.containing(start)
        raise JobFailed(
            f"{period} is not a pay period of the tip policy ({pay_periods.describe()}; "
            f"{start.isoformat()} is in {first.isoformat()}..{last.isoformat()})"
        )
    overlapping = (
        TipStatementDelivery.objects.filter(
            period_start__lte=end, period_end__gte=start, state__in=STATED
        )
        .exclude(Q(period_start=start) & Q(period_end=end))
        .values_list("period_start", "period_end")
        .first()
    )
    if overlapping:
        raise JobFailed(
            f"pay period {period} overlaps {overlapping[0].isoformat()}.."
            f"{overlapping[1].isoformat()}, already stated"
        )


def _require_a_finished_transformation(start: date, end: date) -> TaskStatus | None:
    """Statements go out from a transformation that has finished, never from one midway
    (its shares are being replaced) or one that failed (they may be partial). With no
    run on record (purged after its TTL) the stored shares stand on their own."""
    period = f"{start.isoformat()}..{end.isoformat()}"
    last = latest_run("transform_tips", period_start=start.isoformat(), period_end=end.isoformat())
    if last is None:
        return None
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
    return last


def _report_kept_shares(task: TaskHandle, last: TaskStatus | None, start: date, end: date) -> None:
    """Statements made from shares the last transformation could not replace say so, as
    its payroll file does: the clerk and the employee read the same figures."""
    failed = (last.result or {}).get("failed_locations") if last is not None else None
    if not isinstance(failed, dict):
        return
    assert last is not None
    kept = (
        TipShare.objects.filter(business_date__range=(start, end), location_id__in=list(failed))
        .exclude(task_id=str(last.task_id))
        .values_list("location_id", "task_id")
        .order_by("location_id")
        .distinct()
    )
    for location_id, task_id in kept:
        task.error(
            f"location {location_id}: statements state the shares of run {task_id}; the last "
            f"transform_tips ({last.task_id}) could not transform it ({failed[location_id]})"
        )


def run(task: TaskHandle, params: dict[str, Any]) -> dict[str, Any]:
    """Send every statement of the period that has not gone out in its current form."""
    start: date = params["period_start"]
    end: date = params["period_end"]
    period = f"{start.isoformat()}..{end.isoformat()}"
    _require_a_pay_period(start, end)
    last = _require_a_finished_transformation(start, end)
    if not TipShare.objects.filter(business_date__range=(start, end)).exists():
        if not TipStatementDelivery.objects.filter(
            period_start=start, period_end=end, state__in=STATED
        ).exists():
            raise JobFailed(
                f"pay period {period} has not been transformed; run transform_tips first"
            )
    try:
        roster = {
            str(e.get("employee_id")): e
            for e in roster_source().list_employees()
            if isinstance(e, dict)
        }
    except SourceError as exc:
        raise JobFailed(f"roster source unusable: {exc}") from exc
    _report_kept_shares(task, last, start, end)
    todo = statements(start, end, {k: str(v.get("name") or "") for k, v in roster.items()})
    total = len(todo)
    task.progress(0, f"{period}: 0 of {total} statements", total=total)
    counts = dict.fromkeys(("sent", "correction", "resent", "unchanged", "failed"), 0)
    no_share = 0
    mailer = Mailer()
    try:
        for i, statement in enumerate(todo, 1):
            try:
                outcome = deliver(
                    statement, roster.get(statement.employee_id), mailer, start, end, task.task_id
                )
                counts[outcome] += 1
                if outcome != "unchanged" and "no_share_reason" in statement.data:
                    no_share += 1
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
            note = (
                f" ({counts['resent']} sent again after an interrupted run)"
                if counts["resent"]
                else ""
            )
            task.progress(i, f"{period}: {i} of {total} statements{note}")
    finally:
        mailer.close()
    return {
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "statements": total,
        "sent": counts["sent"] + counts["correction"] + counts["resent"],
        "corrections": counts["correction"],
        "no_share_corrections": no_share,
        "resent_after_interruption": counts["resent"],
        "skipped_unchanged": counts["unchanged"],
        "failed": counts["failed"],
    }
