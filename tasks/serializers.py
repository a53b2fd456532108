"""The one TaskStatus document, for REST bodies and WebSocket payloads alike.

The WebSocket frame around it is built in ``tasks.live.wire`` (the wire format's
one home).

Encoding is hand-rolled rather than a DRF ModelSerializer because the same
document is built on every change in the tracker's hot path; the DRF
serializer below only describes it for the OpenAPI schema.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from .models import Operation, Status, TaskEvent, TaskStatus, unknown_operation


def task_document(task: TaskStatus) -> dict[str, Any]:
    """The contract's document: every key present, unset ones null."""
    return {
        "task_id": str(task.task_id),
        "operation": task.operation,
        "status": task.status,
        "progress": task.progress,
        "result": task.result,
        "error": task.error,
        "created_at": int(task.created_at),
        "updated_at": int(task.updated_at),
        "version": task.version,
    }


class ProgressSerializer(serializers.Serializer):
    current = serializers.IntegerField()
    total = serializers.IntegerField()
    message = serializers.CharField(allow_blank=True)


class TaskStatusSerializer(serializers.Serializer):
    """Schema of the document; see ``task_document`` for the encoder."""

    task_id = serializers.UUIDField()
    operation = serializers.ChoiceField(choices=Operation.choices)
    status = serializers.ChoiceField(choices=Status.choices)
    progress = ProgressSerializer(allow_null=True)
    result = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    created_at = serializers.IntegerField(help_text="Unix seconds")
    updated_at = serializers.IntegerField(help_text="Unix seconds")
    version = serializers.IntegerField(help_text="1 on creation, +1 on every change")

    def to_representation(self, instance: TaskStatus) -> dict[str, Any]:
        return task_document(instance)


class OperationField(serializers.ChoiceField):
    """An operation's name; anything else is refused in the one wording of tasks.models."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=Operation.choices, **kwargs)

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str) or data not in Operation.values:
            raise serializers.ValidationError(unknown_operation(data))
        return data


class LaunchSerializer(serializers.Serializer):
    operation = OperationField()
    params = serializers.DictField(required=False, default=dict)
    rerun_of = serializers.UUIDField(
        required=False,
        allow_null=True,
        default=None,
        help_text='The finished task this launch repeats ("Run again"); same operation.',
    )
    notify = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Mail the launching user (their address) when the task ends.",
    )


def event_document(event: TaskEvent) -> dict[str, Any]:
    """One entry of a task's timeline (``GET /task-status/{id}/events``)."""
    progress = None
    if event.progress_current is not None:
        progress = {
            "current": event.progress_current,
            "total": event.progress_total or 0,
            "message": event.progress_message,
        }
    return {
        "version": event.version,
        "at": int(event.at),
        "kind": event.kind,
        "status": event.status,
        "progress": progress,
        "error": event.error,
        "by": event.by,
    }


class TaskEventSerializer(serializers.Serializer):
    """The schema of a timeline entry (``event_document`` makes it)."""

    version = serializers.IntegerField()
    at = serializers.IntegerField(help_text="Unix seconds")
    kind = serializers.ChoiceField(choices=TaskEvent.Kind.choices)
    status = serializers.ChoiceField(choices=Status.choices)
    progress = ProgressSerializer(allow_null=True)
    error = serializers.CharField(allow_null=True)
    by = serializers.CharField(help_text="who asked, for a cancel request")
