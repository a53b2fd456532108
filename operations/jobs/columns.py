"""What our rows can hold, read from the models: a source's value longer than its column
is a malformed record the job reports, never a DataError that ends it at the save."""

from __future__ import annotations

from django.db import models


def max_length(model: type[models.Model], name: str) -> int:
    column = model._meta.get_field(name)
    assert isinstance(column, models.CharField) and column.max_length is not None
    return column.max_length
