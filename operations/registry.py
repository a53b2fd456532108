"""The seven operations: description, parameter serializer, job; how parameters are checked.

Launching is ``operations.services``.

An operation whose job is not built has ``job=None``: launching it is a 400
"not available", never a fake run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rest_framework import serializers

from tasks import tracker
from tasks.models import Operation, unknown_operation

from . import params as p
from .jobs import (
    daily_sales,
    food_handler_links,
    food_handlers,
    invoice_sync,
    mpvs,
    tip_emails,
    tips,
)

Job = Callable[[tracker.TaskHandle, dict[str, Any]], Any]


@dataclass(frozen=True)
class OperationSpec:
    name: str
    description: str
    params_serializer: type[serializers.Serializer]
    job: Job | None

    @property
    def available(self) -> bool:
        return self.job is not None


OPERATIONS: dict[str, OperationSpec] = {
    spec.name: spec
    for spec in (
        OperationSpec(
            Operation.DAILY_SALES.value,
            "Daily sales summary per location for one business date.",
            p.DailySalesParams,
            daily_sales.run,
        ),
        OperationSpec(
            Operation.INVOICE_SYNC.value,
            "Sync vendor invoices changed since the last sync and export them to accounting.",
            p.InvoiceSyncParams,
            invoice_sync.run,
        ),
        OperationSpec(
            Operation.UPDATE_FOOD_HANDLER_PDFS.value,
            "Fetch every food handler's certificate PDF, check it and each card's "
            "status, and build each location's compliance packet.",
            p.FoodHandlerParams,
            food_handlers.run,
        ),
        OperationSpec(
            Operation.TRANSFORM_TIPS.value,
            "Distribute each location-day's card and cash tips by hours and job "
            "points, and write the payroll import file for the pay period.",
            p.TransformTipsParams,
            tips.run,
        ),
        OperationSpec(
            Operation.GET_MPVS.value,
            "Meal period violations (California rules) and the premium pay they "
            "owe, per location, for one business date.",
            p.MealPeriodParams,
            mpvs.run,
        ),
        OperationSpec(
            Operation.GET_FOOD_HANDLER_LINKS.value,
            "Signed, expiring download links to each employee's certificate and "
            "each location's packet, with the card statuses.",
            p.FoodHandlerLinksParams,
            food_handler_links.run,
        ),
        OperationSpec(
            Operation.EMAIL_TIPS.value,
            "Email each employee the tip statement of a transformed pay period, "
            "once per statement (a changed one goes out as a correction).",
            p.EmailTipsParams,
            tip_emails.run,
        ),
    )
}
assert set(OPERATIONS) == set(Operation.values)


def get_spec(operation: str) -> OperationSpec:
    """The spec of an available operation, else a DRF ValidationError naming the problem."""
    spec = OPERATIONS.get(operation)
    if spec is None:
        raise serializers.ValidationError({"operation": [unknown_operation(operation)]})
    if spec.job is None:
        raise serializers.ValidationError({"operation": [f"{operation} is not available"]})
    return spec


def validate_params(operation: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Validated parameters as JSON; raises DRF ValidationError with field errors."""
    spec = get_spec(operation)
    if params is not None and not isinstance(params, dict):
        raise serializers.ValidationError({"params": ["must be an object"]})
    serializer = spec.params_serializer(data=params or {})
    serializer.is_valid(raise_exception=True)
    return p.to_json(serializer.validated_data)
