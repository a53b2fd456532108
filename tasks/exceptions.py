"""Every API error as JSON: ``{"detail": str, "request_id": str}`` plus field errors."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from . import launcher as service_errors
from .logging import request_id_var
from .tracker import TaskAlreadyFinished, TaskNotFound

logger = logging.getLogger(__name__)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "conflict"
    default_code = "conflict"


class UnprocessableEntity(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "unprocessable request"
    default_code = "unprocessable"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request body too large"
    default_code = "payload_too_large"


# What a 503 asks a client to wait before trying again, in seconds.
RETRY_AFTER_SECONDS = 5
DATABASE_DOWN = "the database is unavailable; try again later"


class DependencyUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "a service this request needs is unavailable; try again later"
    default_code = "unavailable"


class QueueUnavailable(DependencyUnavailable):
    default_detail = "the job queue is unavailable; try again later"
    default_code = "queue_unavailable"


# Launch and cancel refusals (tasks.launcher), as HTTP: the one place they map.
SERVICE_ERRORS: dict[type[service_errors.ServiceError], type[exceptions.APIException]] = {
    service_errors.NotAllowed: exceptions.PermissionDenied,
    service_errors.NoSuchTask: exceptions.NotFound,
    service_errors.LaunchInProgress: Conflict,
    service_errors.KeyReused: UnprocessableEntity,
    service_errors.QueueUnavailable: QueueUnavailable,
}


class BadParameter(exceptions.ValidationError):
    """A malformed query parameter, named in the detail."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__({"detail": f"{name}: {reason}", "parameter": name})


def _flatten(detail: Any) -> tuple[str, dict | None]:
    if isinstance(detail, dict):
        if "detail" in detail:
            rest = {k: v for k, v in detail.items() if k != "detail"}
            return str(detail["detail"]), rest or None
        return "invalid input", {"errors": detail}
    if isinstance(detail, list):
        return "; ".join(str(item) for item in detail) or "invalid input", None
    return str(detail), None


def exception_handler(exc: Exception, context: dict) -> Response | None:
    # Django raises these while DRF reads the body or the query string inside
    # the view; they are the client's fault, never a 500.
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(
            f"request body too large (at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes)"
        )
    elif isinstance(exc, SuspiciousOperation):
        exc = exceptions.ParseError(f"bad request: {exc}")
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is down or went away: the client should retry, not give up.
        logger.warning("database unavailable: %s", exc.__class__.__name__)
        exc = DependencyUnavailable(DATABASE_DOWN)
    if isinstance(exc, service_errors.ServiceError):
        exc = SERVICE_ERRORS[type(exc)](str(exc))
    if isinstance(exc, TaskNotFound):
        exc = exceptions.NotFound("no such task")
    elif isinstance(exc, TaskAlreadyFinished):
        conflict = Response(
            {"detail": str(exc), "status": exc.status}, status=status.HTTP_409_CONFLICT
        )
        conflict.data["request_id"] = request_id_var.get()
        return conflict
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
        response = Response(
            {"detail": "internal error"}, status=status.HTTP_500_INTERNAL_SERVER_ERROR
        )
        return _finish(response, "internal error", None)
    detail, extra = _flatten(response.data)
    return _finish(response, detail, extra)


def _finish(response: Response, detail: str, extra: dict | None) -> Response:
    body: dict[str, Any] = {"detail": detail}
    if extra:
        body.update(extra)
    body["request_id"] = request_id_var.get()
    response.data = body
    if response.status_code == status.HTTP_503_SERVICE_UNAVAILABLE:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def json_error(status_code: int, detail: str) -> JsonResponse:
    response = JsonResponse(
        {"detail": detail, "request_id": request_id_var.get()}, status=status_code
    )
    if status_code == status.HTTP_503_SERVICE_UNAVAILABLE:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def handler400(request, exception=None) -> JsonResponse:
    return json_error(400, "bad request")


def handler403(request, exception=None) -> JsonResponse:
    return json_error(403, "forbidden")


def handler404(request, exception=None) -> JsonResponse:
    return json_error(404, "not found")


def handler500(request) -> JsonResponse:
    return json_error(500, "internal error")
