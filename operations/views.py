"""``GET|HEAD /documents/<token>``: the PDF behind a signed link of get_food_handler_links.

Authenticated like every endpoint, and only for those who may see that
operation's tasks (the personal-data reader role, or staff): anyone else gets the
404 of a document that does not exist. Every refusal is the project's JSON error
(``tasks.exceptions``), never a file: an altered, unknown or oversized token is
403; an expired link, a document gone from storage, or the certificate of someone who
left the roster longer than ``FOOD_HANDLER_RETENTION_DAYS`` ago (file or not) is 410.
"""

from __future__ import annotations

import logging

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tasks.auth.permissions import (
    can_run,
    can_see_operation,
    hidden_for_request,
    request_identity,
)

from . import documents, food_handler_retention, overview
from .schema import OperationsSerializer, OperationStatsSerializer

logger = logging.getLogger(__name__)

OPERATION = "get_food_handler_links"


class Gone(exceptions.APIException):
    status_code = status.HTTP_410_GONE
    default_detail = "this document is no longer available"
    default_code = "gone"


class StorageUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "document storage is unavailable; try again later"
    default_code = "storage_unavailable"


class ErrorsAsJson(BaseContentNegotiation):
    """A download asks for ``application/pdf``; our errors are JSON whatever it accepts,
    rather than a 406 for a client that only said what it wanted on success."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None


class DocumentView(APIView):
    content_negotiation_class = ErrorsAsJson

    def _link(self, request: Request, token: str) -> documents.Link:
        if not can_see_operation(request.user, OPERATION, request_identity(request)):
            raise exceptions.NotFound("no such document")
        try:
            link = documents.unsign(token)
        except documents.LinkExpired:
            raise Gone("this link has expired; run get_food_handler_links for new links") from None
        except documents.BadLink:
            raise exceptions.PermissionDenied("invalid link") from None
        if link.employee and food_handler_retention.departed_past_retention(link.employee):
            raise Gone("this document belonged to someone no longer on the roster")
        return link

    @staticmethod
    def _response(link: documents.Link, body: bytes, length: int) -> HttpResponse:
        response = HttpResponse(body, content_type="application/pdf")
        response["Content-Length"] = str(length)
        response["Content-Disposition"] = f'attachment; filename="{link.filename}"'
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "private, no-store"
        return response

    @extend_schema(
        summary="A food handler certificate or packet behind a signed link",
        responses={(200, "application/pdf"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, token: str) -> HttpResponse:
        link = self._link(request, token)
        try:
            content = documents.read(link.name)
        except documents.DocumentGone:
            raise Gone() from None
        except Exception as exc:  # a storage backend's own error (S3, network): not a 500
            logger.warning("document %s unreadable: %s", link.name, exc.__class__.__name__)
            raise StorageUnavailable() from None
        return self._response(link, content, len(content))

    def head(self, request: Request, token: str) -> HttpResponse:
        link = self._link(request, token)
        try:
            length = documents.size(link.name)
        except documents.DocumentGone:
            raise Gone() from None
        except Exception as exc:  # a storage backend's own error (S3, network): not a 500
            logger.warning("document %s unreadable: %s", link.name, exc.__class__.__name__)
            raise StorageUnavailable() from None
        return self._response(link, b"", length)


class OperationsView(APIView):
    """``GET /operations``: the operations the reader may see (schedule in words and in
    TIME_ZONE, next run, last run, launchable) and the job runners (workers, queue, beat)."""

    @extend_schema(responses=OperationsSerializer)
    def get(self, request: Request) -> Response:
        hidden = hidden_for_request(request)
        can = can_run(request.user, request_identity(request))
        return Response(
            {"operations": overview.operations(hidden, can_run=can), **overview.runners_for(hidden)}
        )


class OperationStatsView(APIView):
    """``GET /operations/{operation}/stats``: the last runs, median and 95th percentile
    duration, the shares that failed or ended with errors; 404 for a hidden operation."""

    @extend_schema(responses=OperationStatsSerializer)
    def get(self, request: Request, operation: str) -> Response:
        figures = overview.stats(operation, hidden=hidden_for_request(request))
        if figures is None:
            raise exceptions.NotFound(f"no operation {operation}")
        return Response(figures)
