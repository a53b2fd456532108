"""How every job reads a number from a source record (operations/jobs/numbers.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from operations.jobs.numbers import finite_decimal


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (12, Decimal("12")),
        (12.5, Decimal("12.5")),
        ("0.10", Decimal("0.10")),
        (" 7.25 ", Decimal("7.25")),
        (-3, Decimal("-3")),
        (Decimal("1.01"), Decimal("1.01")),
    ],
)
def test_numbers_are_read_exactly(raw, expected):
    assert finite_decimal(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        None,
        True,
        False,
        "two",
        "",
        "NaN",
        "Infinity",
        "-inf",
        float("nan"),
        float("inf"),
        "1e400",
        10**20,
        [],
        {},
        "1,5",
    ],
)
def test_anything_else_is_not_a_number(raw):
    assert finite_decimal(raw) is None
