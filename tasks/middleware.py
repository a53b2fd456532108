"""``X-Request-ID`` on every HTTP response and log line; NUL bytes refused at the door;
a Content-Security-Policy on every HTML page."""

from __future__ import annotations

import logging
import time
import uuid

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject

from .exceptions import DATABASE_DOWN, json_error
from .hybrid import HybridMiddleware
from .logging import request_id_var, sane_request_id

access_logger = logging.getLogger("tasks.access")


class RequestWithID(HttpRequest):
    """For the type checker: a request this middleware has seen carries ``request_id``."""

    request_id: str


def _username(request: HttpRequest) -> str | None:
    """Who made the request, if something already found out: never a lookup of its own.

    A session's user is lazy; evaluating it here would cost a query per request
    (and fail while the database is down). DRF replaces it with the user it
    authenticated, and Django's lazy user caches itself once read.
    """
    user = request.__dict__.get("user")
    if isinstance(user, SimpleLazyObject):
        user = request.__dict__.get("_cached_user")
    if user is None or not user.is_authenticated:
        return None
    return user.get_username()


def _client(request: HttpRequest) -> str:
    """The client's address: the proxy's ``X-Forwarded-For`` when the peer is on loopback.

    The shipped proxy runs on the same host and sets the header to the address it
    saw; a peer elsewhere is the client itself, whatever it claims.
    """
    peer = request.META.get("REMOTE_ADDR", "")
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if forwarded and peer in _LOOPBACK:
        return forwarded.rsplit(",", 1)[-1].strip()
    return peer


_LOOPBACK = frozenset({"127.0.0.1", "::1"})


class RequestIDMiddleware(HybridMiddleware):
    """Outermost middleware, so errors, redirects and 304s carry the header too."""

    def _begin(self, request: RequestWithID) -> float:
        # Not reset on the way out: Django logs the response ("django.request")
        # after the middleware chain returns, and that line must carry the id.
        # Each ASGI request runs in its own context; a WSGI thread sets it anew.
        request_id = sane_request_id(request.headers.get("X-Request-ID")) or str(uuid.uuid4())
        request.request_id = request_id
        request_id_var.set(request_id)
        return time.perf_counter()

    def _end(self, request: RequestWithID, response: HttpResponse, began: float) -> HttpResponse:
        response["X-Request-ID"] = request.request_id
        # One access line per request, carrying the request id (daphne's own
        # access log cannot); the logging filter redacts tokens in the query.
        # Its fields (tasks.logging.ACCESS_FIELDS) are what LOG_FORMAT=json prints.
        duration_ms = round((time.perf_counter() - began) * 1000, 1)
        access_logger.info(
            "%s %s %s %.1fms",
            request.method,
            request.get_full_path(),
            response.status_code,
            duration_ms,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "user": _username(request),
                "client": _client(request),
            },
        )
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A page (not a REST view, which answers for itself) whose database is down: 503."""
        if isinstance(exception, OperationalError | InterfaceError):
            logging.getLogger(__name__).warning(
                "database unavailable: %s", exception.__class__.__name__
            )
            return json_error(503, DATABASE_DOWN)
        return None

    def handle(self, request: RequestWithID) -> HttpResponse:
        began = self._begin(request)
        return self._end(request, self.get_response(request), began)

    async def __acall__(self, request: RequestWithID) -> HttpResponse:
        began = self._begin(request)
        return self._end(request, await self.get_response(request), began)


class NulByteGuardMiddleware(HybridMiddleware):
    """A NUL byte in the query string is a 400, before any view sees it.

    PostgreSQL cannot hold one in a text value, so a filter carrying it (the
    admin's changelist, a page's query) would fail in the database as a 500.
    No valid request of this service contains one.
    """

    @staticmethod
    def _refused(request: HttpRequest) -> HttpResponse | None:
        if any(
            "\x00" in key or any("\x00" in value for value in values)
            for key, values in request.GET.lists()
        ):
            return json_error(400, "bad request: the query string contains a NUL byte")
        return None

    def handle(self, request: HttpRequest) -> HttpResponse:
        return self._refused(request) or self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return self._refused(request) or await self.get_response(request)


class ContentSecurityPolicyMiddleware(HybridMiddleware):
    """``CONTENT_SECURITY_POLICY`` on every HTML answer: our pages, the admin, /api/docs.

    A ``<meta>`` tag covers only the templates that carry it, and cannot say
    ``frame-ancestors``; a header covers every page, Django's own included. An
    answer that already names a policy keeps it.
    """

    @staticmethod
    def _apply(response: HttpResponse) -> HttpResponse:
        if response.get("Content-Type", "").startswith("text/html"):
            response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response

    def handle(self, request: HttpRequest) -> HttpResponse:
        return self._apply(self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return self._apply(await self.get_response(request))
