"""What the API schema (drf-spectacular) says of the operations: documentation only.

A launch body is one shape per operation, its ``params`` that operation's own
parameter serializer, told apart by ``operation``; so a client generated from
``/api/schema`` knows each operation's fields, as the Run form and
``run_operation`` do. The views never validate with these.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiViewExtension
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tasks.models import Operation, Status
from tasks.serializers import TaskStatusSerializer

from .registry import OPERATIONS


def _launch_body(name: str) -> type[serializers.Serializer]:
    spec = OPERATIONS[name]
    fields = {
        # all of Operation, so that the schema has one enum; the mapping picks the shape
        "operation": serializers.ChoiceField(choices=Operation.choices, help_text=spec.description),
        "params": spec.params_serializer(required=False),
        "rerun_of": serializers.UUIDField(
            required=False,
            allow_null=True,
            help_text='The finished task this launch repeats ("Run again"); same operation.',
        ),
        "notify": serializers.BooleanField(
            required=False,
            default=False,
            help_text="Mail the launching user (their address) when the task ends.",
        ),
        "__module__": __name__,
        "__doc__": f"Launch {name}: {spec.description}",
    }
    class_name = "".join(part.title() for part in name.split("_")) + "Launch"
    return type(class_name, (serializers.Serializer,), fields)


LAUNCH_REQUEST = PolymorphicProxySerializer(
    component_name="LaunchRequest",
    serializers={name: _launch_body(name) for name in Operation.values},
    resource_type_field_name="operation",
)


class RunSummarySerializer(serializers.Serializer):
    task_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=Status.choices)
    created_at = serializers.IntegerField(help_text="Unix seconds")
    updated_at = serializers.IntegerField(help_text="Unix seconds")
    duration = serializers.FloatField(
        allow_null=True, help_text="seconds, once the run has finished"
    )
    url = serializers.CharField(help_text="the task's page")


# Built, not declared: a field named ``label`` would shadow Field.label for the checker.
OperationSerializer = type(
    "OperationSerializer",
    (serializers.Serializer,),
    {
        "__module__": __name__,
        "operation": serializers.ChoiceField(choices=Operation.choices),
        "label": serializers.CharField(),
        "description": serializers.CharField(),
        "schedule": serializers.CharField(
            allow_null=True, help_text='in words, in TIME_ZONE ("every day at 04:30")'
        ),
        "next_run": serializers.DateTimeField(allow_null=True),
        "late_since": serializers.IntegerField(
            allow_null=True,
            help_text="Unix seconds: when the scheduled run that has not started was due "
            "(late once SCHEDULE_GRACE_SECONDS have passed); null when none is late",
        ),
        "last_run": RunSummarySerializer(allow_null=True),
        "can_launch": serializers.BooleanField(
            help_text="this user may launch it, and it runs here"
        ),
    },
)


class RunningJobSerializer(serializers.Serializer):
    task_id = serializers.UUIDField()
    operation = serializers.ChoiceField(choices=Operation.choices)
    since = serializers.IntegerField(help_text="Unix seconds")


class WorkerSerializer(serializers.Serializer):
    name = serializers.CharField()
    since = serializers.IntegerField(allow_null=True, help_text="Unix seconds")
    running = RunningJobSerializer(many=True)


class QueueSerializer(serializers.Serializer):
    name = serializers.CharField()
    waiting = serializers.IntegerField(
        allow_null=True, help_text="messages waiting; null for the in-process runner"
    )


class OperationsSerializer(serializers.Serializer):
    operations = OperationSerializer(many=True)
    workers = WorkerSerializer(many=True)
    queue = QueueSerializer()
    beat = serializers.CharField(allow_null=True, help_text="who holds the beat lock")
    beat_last_seen = serializers.IntegerField(
        allow_null=True, help_text="when the beat holding the lock last ticked, Unix seconds"
    )
    beat_status = serializers.CharField(
        help_text='beat\'s liveness in words ("beat last seen 3 min ago", "beat is not running")'
    )
    problems = serializers.ListField(
        child=serializers.CharField(), help_text="what is wrong, said plainly"
    )
    checked_at = serializers.IntegerField(help_text="when the workers were asked, Unix seconds")


class StatsRunSerializer(serializers.Serializer):
    task_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=Status.choices)
    created_at = serializers.IntegerField(help_text="Unix seconds")
    duration = serializers.FloatField(help_text="seconds")
    url = serializers.CharField()


class FailureGroupSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="the error with ids, numbers and dates folded")
    count = serializers.IntegerField()
    unacknowledged = serializers.IntegerField(help_text="of these, nobody acknowledged")
    last_seen = serializers.IntegerField(help_text="Unix seconds")
    last_task_id = serializers.UUIDField()


class OperationStatsSerializer(serializers.Serializer):
    operation = serializers.ChoiceField(choices=Operation.choices)
    runs = StatsRunSerializer(many=True, help_text="the last finished runs, newest first")
    count = serializers.IntegerField()
    median_duration = serializers.FloatField(allow_null=True)
    p95_duration = serializers.FloatField(allow_null=True)
    failed_share = serializers.FloatField(allow_null=True, help_text="0 to 1")
    with_errors_share = serializers.FloatField(allow_null=True, help_text="0 to 1")
    failure_groups = FailureGroupSerializer(
        many=True, help_text="failed runs grouped by folded error, latest first"
    )


class LaunchBodyExtension(OpenApiViewExtension):
    """``POST /task-status``'s body in the schema: one shape per operation.

    ``tasks`` declares the generic body (``LaunchSerializer``) and knows no operation's
    parameters; loaded by ``OperationsConfig.ready``, this gives the schema each one's.
    """

    target_class = "tasks.views.TaskListView"

    def view_replacement(self) -> type[APIView]:
        class WithLaunchBodies(self.target):  # type: ignore[name-defined]
            @extend_schema(request=LAUNCH_REQUEST, responses={202: TaskStatusSerializer})
            def post(self, request: Request) -> Response:
                return super().post(request)

        return WithLaunchBodies
