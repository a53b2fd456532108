"""REST views: parse, call one selector or service, answer with the one document."""

from __future__ import annotations

import hashlib
import re

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.http import JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import selectors
from .auth.permissions import CanRunTasks, hidden_for_request
from .exceptions import BadParameter, Conflict, UnprocessableEntity
from .models import IdempotencyKey, Operation, Status
from .pagination import make_cursor, next_link, read_cursor
from .serializers import LaunchSerializer, TaskStatusSerializer, task_document

MAX_LIMIT = 1000
DEFAULT_LIMIT = 500
_DIGITS = re.compile(r"[0-9]{1,7}")
_UNIX_SECONDS = re.compile(r"[0-9]{1,15}(\.[0-9]{1,9})?")


def _etag(task) -> str:
    digest = hashlib.sha1(f"{task.task_id}:{task.version}".encode()).hexdigest()[:20]
    return f'"{digest}"'


def _not_modified(request: Request, etag: str) -> bool:
    header = request.headers.get("If-None-Match", "")
    candidates = {value.strip().removeprefix("W/") for value in header.split(",")}
    return "*" in candidates or etag in candidates


def _parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    # ASCII digits only: int() would also take "１" or " 5_0 ".
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadParameter("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _parse_operation(raw: str | None) -> str | None:
    if raw is None:
        return None
    if raw not in Operation.values:
        raise BadParameter(
            "operation", f"unknown operation {raw!r}; valid: {', '.join(Operation.values)}"
        )
    return raw


def _parse_statuses(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    values = [value.strip() for value in raw.split(",") if value.strip()]
    bad = [value for value in values if value not in Status.values]
    if bad or not values:
        raise BadParameter(
            "status", f"unknown status {', '.join(bad) or raw!r}; valid: {', '.join(Status.values)}"
        )
    return values


def _parse_since(raw: str | None) -> float | None:
    if raw is None:
        return None
    if not _UNIX_SECONDS.fullmatch(raw):
        raise BadParameter("updated_since", "must be Unix seconds (a non-negative number)")
    return float(raw)  # at most 15 digits: always finite


LIST_PARAMETERS = [
    OpenApiParameter("operation", OpenApiTypes.STR, enum=Operation.values),
    OpenApiParameter("status", OpenApiTypes.STR, description="comma-separated statuses"),
    OpenApiParameter("updated_since", OpenApiTypes.NUMBER, description="Unix seconds, inclusive"),
    OpenApiParameter("limit", OpenApiTypes.INT, description="1 to 1000, default 500"),
    OpenApiParameter("cursor", OpenApiTypes.STR, description="from the Link header"),
]


class TaskListView(APIView):
    """``GET /task-status``: newest first; ``POST /task-status``: launch a run."""

    def get_permissions(self):
        if self.request.method == "POST":
            return [*super().get_permissions(), CanRunTasks()]
        return super().get_permissions()

    @extend_schema(parameters=LIST_PARAMETERS, responses=TaskStatusSerializer(many=True))
    def get(self, request: Request) -> Response:
        query = request.query_params
        filters = {
            "operation": _parse_operation(query.get("operation")),
            "status": query.get("status"),
            "updated_since": query.get("updated_since"),
        }
        statuses = _parse_statuses(filters["status"])
        updated_since = _parse_since(filters["updated_since"])
        limit = _parse_limit(query.get("limit"))
        after = read_cursor(query["cursor"], filters) if "cursor" in query else None
        tasks = selectors.list_tasks(
            operation=filters["operation"],
            statuses=statuses,
            updated_since=updated_since,
            after=after,
            limit=limit + 1,
            hidden=hidden_for_request(request),
        )
        response = Response([task_document(task) for task in tasks[:limit]])
        if len(tasks) > limit:
            last = tasks[limit - 1]
            cursor = make_cursor((last.created_at, str(last.task_id)), filters)
            url = request.build_absolute_uri(request.path)
            response["Link"] = next_link(url, {**filters, "limit": limit}, cursor)
        return response

    @extend_schema(request=LaunchSerializer, responses={202: TaskStatusSerializer})
    def post(self, request: Request) -> Response:
        body = LaunchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        from operations.registry import OPERATIONS, launch

        operation = body.validated_data["operation"]
        spec = OPERATIONS.get(operation)
        if spec is None or spec.job is None:
            raise exceptions.ValidationError(
                {"detail": f"operation {operation} is not available yet", "operation": operation}
            )
        hidden = hidden_for_request(request)
        if operation in hidden:
            raise exceptions.PermissionDenied(
                f"{operation} handles personal data: launching it needs its reader role"
            )
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            if not _IDEMPOTENCY_KEY.fullmatch(key):
                raise BadParameter("Idempotency-Key", "must be 1 to 200 printable ASCII characters")
            claim = _claim_idempotency_key(request.user, key)
            if claim.task_id is not None:
                task = selectors.get_task(str(claim.task_id), hidden=hidden)
                if task is not None:
                    _same_launch_or_422(task, operation, body.validated_data["params"])
                    response = Response(task_document(task), status=status.HTTP_200_OK)
                    response["Location"] = _location(request, task.task_id)
                    return response
        try:
            task_id = launch(
                operation,
                body.validated_data["params"],
                request_id=getattr(request._request, "request_id", None),
                user_label=request.user.get_username(),
            )
        except Exception:
            if key is not None:
                IdempotencyKey.objects.filter(pk=claim.pk, task_id__isnull=True).delete()
            raise
        if key is not None:
            IdempotencyKey.objects.filter(pk=claim.pk).update(task_id=task_id)
        task = selectors.get_task(task_id)
        response = Response(task_document(task), status=status.HTTP_202_ACCEPTED)
        response["Location"] = _location(request, task_id)
        return response


_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,200}")


def _location(request: Request, task_id) -> str:
    return request.build_absolute_uri(f"/task-status/{task_id}")


def _same_launch_or_422(task, operation: str, params: dict | None) -> None:
    """A key names one request: reusing it for another launch is the client's bug.

    Only the parameters the repeat names are compared: a default (yesterday's
    business date) may have moved on since the first request.
    """
    from operations.registry import validate_params

    stored = task.params or {}
    given = validate_params(operation, params) if task.operation == operation else {}
    if task.operation != operation or any(
        stored.get(name) != given.get(name) for name in (params or {})
    ):
        raise UnprocessableEntity(
            "this Idempotency-Key was used for a different launch; use a new key"
        )


def _claim_idempotency_key(user, key: str) -> IdempotencyKey:
    """The row for (user, key); the first request to insert it is the one that launches."""
    try:
        with transaction.atomic():
            return IdempotencyKey.objects.create(user_id=user.pk, key=key)
    except IntegrityError:
        claim = IdempotencyKey.objects.get(user_id=user.pk, key=key)
        if claim.task_id is None:
            raise Conflict("a launch with this Idempotency-Key is still in progress") from None
        return claim


class TaskDetailView(APIView):
    """``GET /task-status/{task_id}`` with an ``ETag``."""

    @extend_schema(responses=TaskStatusSerializer)
    def get(self, request: Request, task_id: str) -> Response:
        task = selectors.get_task(task_id, hidden=hidden_for_request(request))
        if task is None:
            raise exceptions.NotFound(f"no task {task_id}")
        etag = _etag(task)
        if _not_modified(request, etag):
            response = Response(status=status.HTTP_304_NOT_MODIFIED)
        else:
            response = Response(task_document(task))
        response["ETag"] = etag
        return response


class TaskCancelView(APIView):
    """``POST /task-status/{task_id}/cancel``: a queued job ends now, a running one later."""

    permission_classes = [*APIView.permission_classes, CanRunTasks]

    @extend_schema(request=None, responses={202: TaskStatusSerializer})
    def post(self, request: Request, task_id: str) -> Response:
        task = selectors.get_task(task_id, hidden=hidden_for_request(request))
        if task is None:
            raise exceptions.NotFound(f"no task {task_id}")
        from operations.runner import cancel

        task = cancel(str(task.task_id), by=request.user.get_username())
        return Response(task_document(task), status=status.HTTP_202_ACCEPTED)


class ApiDocsView(SpectacularSwaggerView):
    """The interactive docs; refusals (401, 406) in JSON like every endpoint, not HTML."""

    def handle_exception(self, exc: Exception) -> Response:
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = "application/json"
        return super().handle_exception(exc)


def healthz(request) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request) -> JsonResponse:
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready
        checks["database"] = f"unavailable: {exc.__class__.__name__}"
    if settings.REDIS_URL:
        try:
            from .broadcast import _redis

            _redis().ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unavailable: {exc.__class__.__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
