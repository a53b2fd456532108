"""``X-Request-ID`` on every HTTP response, and in every log line of the request."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from .logging import request_id_var, sane_request_id


class RequestIDMiddleware:
    """Outermost middleware, so errors, redirects and 304s carry the header too."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _begin(self, request: HttpRequest) -> None:
        # Not reset on the way out: Django logs the response ("django.request")
        # after the middleware chain returns, and that line must carry the id.
        # Each ASGI request runs in its own context; a WSGI thread sets it anew.
        request_id = sane_request_id(request.headers.get("X-Request-ID")) or str(uuid.uuid4())
        request.request_id = request_id
        request_id_var.set(request_id)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        self._begin(request)
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        self._begin(request)
        response = await self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response
