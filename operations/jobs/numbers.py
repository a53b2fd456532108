"""Numbers from a source's records, read one way by every job.

A source sends amounts, rates and points as JSON numbers or strings; whatever
else arrives (a boolean, null, "two", NaN, infinity, or a number no amount
could be) is not a number, and each job says so in its own words.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

# No amount, rate or point count of a restaurant group comes near this; beyond it
# Decimal arithmetic (quantize to the cent) would itself fail.
LIMIT = Decimal(10) ** 15


def finite_decimal(value: Any) -> Decimal | None:
    """``value`` as an exact Decimal, or None when it is not a plausible number."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        return None
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite() or abs(number) >= LIMIT:
        return None
    return number
