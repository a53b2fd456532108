"""What a tip statement says, and the message that carries it.

A statement is what ``transform_tips`` stored for one employee over the period
(``TipShare`` rows): per location, per day the hours, card and cash tips, and
the totals. Its identity is the SHA-256 of a canonical JSON of that data (not
of the rendered email). An employee who was stated an amount for the period
and has no share any more (a re-run took their job out of the pool, or their
hours) gets a statement of $0.00 that says why: statements follow the stored
shares both ways.

The Message-ID is derived from the employee, the period, the content and how
many statements of the period went to the employee before, so the message
written down before a send is the message sent again after a crash.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from email.utils import parseaddr
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from ..models import TipShare, TipStatementDelivery

ZERO = Decimal("0.00")
TEMPLATES = "operations/tip_statement"
STATED = (TipStatementDelivery.State.SENT, TipStatementDelivery.State.INTENDED)
NO_SHARE_REASON = (
    "the tip pools of this period were computed again and you no longer have hours in a "
    "job that shares tips at any location"
)


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


def no_share_data(employee_id: str, name: str, start: date, end: date) -> dict[str, Any]:
    """The statement of someone stated an amount before who has no share any more."""
    return {
        "employee_id": employee_id,
        "employee_name": name,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "locations": [],
        "no_share_reason": NO_SHARE_REASON,
        **_sums([]),
    }


def statements(start: date, end: date, names: dict[str, str]) -> list[Statement]:
    """Every employee's statement: from the shares stored for the period, and $0.00 for
    each employee stated an amount for it who has no share any more (``names``: the
    roster's names, for them)."""
    rows: dict[str, list[TipShare]] = defaultdict(list)
    for row in TipShare.objects.filter(business_date__range=(start, end)):
        rows[row.employee_id].append(row)
    stated = set(
        TipStatementDelivery.objects.filter(
            period_start=start, period_end=end, state__in=STATED
        ).values_list("employee_id", flat=True)
    )
    out = []
    for employee_id in sorted(set(rows) | stated):
        if rows.get(employee_id):
            data = statement_data(employee_id, rows[employee_id], start, end)
        else:
            data = no_share_data(employee_id, names.get(employee_id, ""), start, end)
        out.append(Statement(employee_id, data["employee_name"], data))
    return out


def message_id(statement: Statement, start: date, end: date, sequence: int) -> str:
    """The same statement, the same period and the same place in the employee's history
    give the same Message-ID: the one written down before a send is the one sent again."""
    digest = hashlib.sha256(
        f"{statement.employee_id}|{start}|{end}|{statement.content_hash}|{sequence}".encode()
    ).hexdigest()[:40]
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "localhost"
    return f"<tip-statement.{digest}@{domain}>"


def build_message(
    statement: Statement, address: str, correction: bool, msgid: str
) -> EmailMultiAlternatives:
    """Plain text and HTML from the templates, with the Message-ID of the recorded intent."""
    context = {"s": statement.data, "correction": correction}
    subject = " ".join(render_to_string(f"{TEMPLATES}_subject.txt", context).split())
    message = EmailMultiAlternatives(
        subject,
        render_to_string(f"{TEMPLATES}.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[address],
        headers={"Message-ID": msgid},
    )
    message.attach_alternative(render_to_string(f"{TEMPLATES}.html", context), "text/html")
    return message
