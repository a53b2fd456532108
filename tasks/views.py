"""REST views: parse, call one selector or service, answer with the one document."""

from __future__ import annotations

import hashlib
import re

from django.http import HttpResponse, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import metrics, readiness, selectors
from .auth.permissions import CanRunTasks, hidden_for_request
from .exceptions import RETRY_AFTER_SECONDS, BadParameter, json_error
from .filters import parse_events_query, parse_list_query
from .launcher import LaunchRequest, launcher
from .models import Operation
from .pagination import KeysetLinkPagination
from .serializers import (
    LaunchSerializer,
    TaskEventSerializer,
    TaskStatusSerializer,
    event_document,
    task_document,
)


def _etag(task) -> str:
    digest = hashlib.sha1(f"{task.task_id}:{task.version}".encode()).hexdigest()[:20]
    return f'"{digest}"'


def _not_modified(request: Request, etag: str) -> bool:
    header = request.headers.get("If-None-Match", "")
    candidates = {value.strip().removeprefix("W/") for value in header.split(",")}
    return "*" in candidates or etag in candidates


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

    pagination_class = KeysetLinkPagination

    @extend_schema(parameters=LIST_PARAMETERS, responses=TaskStatusSerializer(many=True))
    def get(self, request: Request) -> Response:
        self.list_query = query = parse_list_query(request.query_params)
        tasks = selectors.list_document_rows(
            operation=query.operation,
            statuses=query.statuses,
            updated_since=query.updated_since,
            after=query.after,
            limit=query.limit + 1,
            hidden=hidden_for_request(request),
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(tasks, request, view=self)
        return paginator.get_paginated_response([task_document(task) for task in page])

    # The body's per-operation shapes: operations.schema refines this in the schema.
    @extend_schema(request=LaunchSerializer, responses={202: TaskStatusSerializer})
    def post(self, request: Request) -> Response:
        body = LaunchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
            raise BadParameter("Idempotency-Key", "must be 1 to 200 printable ASCII characters")
        launched = launcher().launch(
            LaunchRequest(
                operation=body.validated_data["operation"],
                params=body.validated_data["params"],
                user=request.user,
                hidden=hidden_for_request(request),
                request_id=getattr(request._request, "request_id", None),
                idempotency_key=key,
                rerun_of=body.validated_data["rerun_of"],
                notify=body.validated_data["notify"],
            )
        )
        response = Response(
            task_document(launched.task),
            status=status.HTTP_202_ACCEPTED if launched.created else status.HTTP_200_OK,
        )
        response["Location"] = request.build_absolute_uri(f"/task-status/{launched.task.task_id}")
        return response


_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,200}")


class TaskDetailView(APIView):
    """``GET /task-status/{task_id}`` with an ``ETag``."""

    @extend_schema(responses=TaskStatusSerializer)
    def get(self, request: Request, task_id: str) -> Response:
        task = selectors.get_task(
            task_id, hidden=hidden_for_request(request), only=selectors.DOCUMENT_COLUMNS
        )
        if task is None:
            raise exceptions.NotFound(f"no task {task_id}")
        etag = _etag(task)
        if _not_modified(request, etag):
            response = Response(status=status.HTTP_304_NOT_MODIFIED)
        else:
            response = Response(task_document(task))
        response["ETag"] = etag
        return response


class TaskEventsView(APIView):
    """``GET /task-status/{task_id}/events``: the timeline, same visibility as the task."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "after_version",
                OpenApiTypes.INT,
                description="Only the entries of versions above this one (a page's update).",
            )
        ],
        responses=TaskEventSerializer(many=True),
    )
    def get(self, request: Request, task_id: str) -> Response:
        after_version = parse_events_query(request.query_params)
        task = selectors.get_task(task_id, hidden=hidden_for_request(request))
        if task is None:
            raise exceptions.NotFound(f"no task {task_id}")
        events = selectors.task_events(task, after_version=after_version)
        return Response([event_document(event) for event in events])


class TaskCancelView(APIView):
    """``POST /task-status/{task_id}/cancel``: a queued job ends now, a running one later."""

    permission_classes = [*APIView.permission_classes, CanRunTasks]

    @extend_schema(request=None, responses={202: TaskStatusSerializer})
    def post(self, request: Request, task_id: str) -> Response:
        task = launcher().cancel(
            task_id, by=request.user.get_username(), hidden=hidden_for_request(request)
        )
        return Response(task_document(task), status=status.HTTP_202_ACCEPTED)


class ApiDocsView(SpectacularSwaggerSplitView):
    """The interactive docs; refusals (401, 406) in JSON like every endpoint, not HTML.

    Swagger UI from our static files, its init script from ``?script``: nothing
    inline, nothing from a CDN, so the site's Content-Security-Policy holds here too.
    """

    template_name = "tasks/api_docs.html"

    def handle_exception(self, exc: Exception) -> Response:
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = "application/json"
        return super().handle_exception(exc)


def healthz(request) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request) -> JsonResponse:
    """Unauthenticated for load balancers: which dependency is down, nothing more."""
    checks = readiness.check()
    ready = all(value == readiness.OK for value in checks.values())
    response = JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
    response["Cache-Control"] = "no-store"
    if not ready:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def metrics_view(request) -> HttpResponse:
    """``GET /metrics`` of gunicorn and daphne (never proxied by nginx; README, "Metrics")."""
    code = metrics.check_token(request.headers.get("Authorization"))
    if code == 200 and request.method not in ("GET", "HEAD"):
        code = 405
    if code != 200:
        refusal = json_error(code, metrics.REFUSAL_DETAILS[code])
        if code == 401:
            refusal["WWW-Authenticate"] = 'Bearer realm="metrics"'
        elif code == 405:
            refusal["Allow"] = "GET, HEAD"
        return refusal
    body, content_type = metrics.render(request.headers.get("Accept"))
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
