"""What the status store's doors get from the jobs' side: ``tasks.launcher``'s
``Launcher``, registered by ``OperationsConfig.ready``.

The launch and cancel are ``services``'; the Run bar is built from each
operation's parameter serializer (``registry``); the monitor's header and a task
page's notes come from the watchdog's modules (running long, retries, triage,
notify).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from rest_framework import serializers

from tasks.launcher import Launched, LaunchRequest
from tasks.models import Operation, TaskStatus

from . import notify, overview, retries, running_long, services, triage
from .registry import OPERATIONS

# The HTML input that edits each kind of DRF field (the first match wins).
_INPUT_KINDS: tuple[tuple[type[serializers.Field], str], ...] = (
    (serializers.BooleanField, "checkbox"),
    (serializers.DateTimeField, "datetime-local"),
    (serializers.DateField, "date"),
    (serializers.ListField, "list"),
    (serializers.IntegerField, "number"),
    (serializers.ChoiceField, "select"),
)


def _input_kind(field: serializers.Field) -> str:
    """The HTML input that edits a DRF field; the browser turns its value back into JSON."""
    return next((kind for cls, kind in _INPUT_KINDS if isinstance(field, cls)), "text")


def param_fields(serializer_class: type[serializers.Serializer]) -> list[dict[str, Any]]:
    """A form description built from an operation's parameter serializer.

    Empty inputs are left out of the launch, so the serializer's own defaults
    apply exactly as they do for ``"params": {}``.
    """
    fields = []
    for name, field in serializer_class().fields.items():
        default = None if field.default is serializers.empty else field.default
        fields.append(
            {
                "name": name,
                "label": (field.label or name.replace("_", " ")).capitalize(),
                "kind": _input_kind(field),
                "help": str(field.help_text or ""),
                "required": bool(field.required),
                "checked": default is True,
                "choices": list(getattr(field, "choices", {}).items()),
            }
        )
    return fields


def run_bar(hidden: frozenset[str]) -> list[dict[str, Any]]:
    """The monitor's Run form: every operation the reader may see, and its fields."""
    out = []
    for value, label in Operation.choices:
        if value in hidden:
            continue
        spec = OPERATIONS.get(value)
        out.append(
            {
                "name": value,
                "label": label,
                "description": spec.description if spec else "",
                "available": bool(spec and spec.available),
                "fields": param_fields(spec.params_serializer) if spec else [],
            }
        )
    return out


class OperationsLauncher:
    """``tasks.launcher.Launcher`` for the seven operations."""

    def launch(self, request: LaunchRequest) -> Launched:
        launched = services.launch_task(
            request.operation,
            request.params,
            launched_by=request.user.get_username(),
            hidden=request.hidden,
            request_id=request.request_id,
            idempotency_key=request.idempotency_key,
            key_owner=request.user.pk,
            rerun_of=request.rerun_of,
        )
        if request.notify:
            notify.request(str(launched.task.task_id), request.user, hidden=request.hidden)
        return launched

    def cancel(self, task_id: str, *, by: str, hidden: frozenset[str]) -> TaskStatus:
        return services.cancel_task(task_id, by=by, hidden=hidden)

    def run_bar(self, hidden: frozenset[str]) -> list[dict[str, Any]]:
        return run_bar(hidden)

    def can_run_again(self, operation: str) -> bool:
        spec = OPERATIONS.get(operation)
        return bool(spec and spec.available)

    def monitor_notes(self, hidden: frozenset[str]) -> dict[str, Any]:
        return {
            "unacknowledged": triage.unacknowledged(hidden),
            "runner_problems": overview.runners(wait=False)["problems"]
            + [f"Running long: {run.words}" for run in running_long.long_runs(hidden=hidden)],
        }

    def task_notes(
        self, task: TaskStatus, user: AbstractBaseUser | AnonymousUser
    ) -> dict[str, Any]:
        return {
            "running_long": running_long.note_for(task),
            "retries": retries.chain(task),
            "notify_wanted": notify.wanted(str(task.task_id), user),
            "acknowledged": triage.acknowledgement(str(task.task_id)),
        }
