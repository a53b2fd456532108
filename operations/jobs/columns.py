"""What our rows can hold, read from the models: a source's value longer than its column
is a malformed record the job reports, never a DataError that ends it at the save."""

from __future__ import annotations

from decimal import Decimal

from django.db import models


def max_length(model: type[models.Model], name: str) -> int:
    column = model._meta.get_field(name)
    assert isinstance(column, models.CharField) and column.max_length is not None
    return column.max_length


def max_amount(model: type[models.Model], name: str) -> Decimal:
    """The largest amount a DecimalField holds: numeric(10,2) -> 99,999,999.99."""
    column = model._meta.get_field(name)
    assert isinstance(column, models.DecimalField)
    assert column.max_digits is not None and column.decimal_places is not None
    places = column.decimal_places
    return Decimal(10) ** (column.max_digits - places) - Decimal(10) ** -places
