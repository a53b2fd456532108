"""WebSocket handshake: Host and Origin checks and credentials, through the REST code path."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from channels.sessions import SessionMiddlewareStack
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import InterfaceError, OperationalError
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from accounts.identity import Identity, InvalidToken

from .bearer import authenticate_bearer, cached_bearer


def bearer_from_scope(scope: dict) -> str | None:
    """``?access_token=`` first (browsers cannot set headers), then ``Authorization``."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "access_token" in query:
        return query["access_token"][-1]
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            parts = value.decode("latin-1").split()
            if len(parts) == 2 and parts[0].lower() == "bearer":
                return parts[1]
            return ""
    return None


class SessionAuthMiddleware(AuthMiddleware):
    """Cookie clients (the staff pages): the identity of the Django session's user."""

    async def resolve_scope(self, scope: dict) -> None:
        try:
            await super().resolve_scope(scope)
        except (OperationalError, InterfaceError):
            # Fail closed, and say why: the consumer closes with 4503 (try again later).
            scope["user"]._wrapped = AnonymousUser()
            scope["dependency_error"] = "the database is unavailable"
            return
        user = scope["user"]
        if user.is_authenticated:
            scope["identity"] = Identity(user=user, by_token=False)


def _header(scope: dict, wanted: bytes) -> bytes | None:
    """The last value of one request header (Channels' Origin check takes the last too)."""
    found = None
    for name, value in scope.get("headers", ()):
        if name == wanted:
            found = value
    return found


def host_allowed(scope: dict) -> bool:
    """Django's Host check, which HTTP requests get and daphne skips."""
    host = _header(scope, b"host")
    if host is None:
        return True
    domain, _port = split_domain_port(host.decode("latin-1"))
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


def origin_allowed(scope: dict) -> bool:
    """Refuse a browser from a foreign Origin; allow non-browser clients (no Origin).

    Allowed: the ``ALLOWED_HOSTS``, plus ``WS_ALLOWED_ORIGINS`` for browser
    applications served from another host that connect with a token. An Origin
    that ``urlparse`` cannot take (``http://[``) is refused, not a 500.
    """
    origin = _header(scope, b"origin")
    if origin is None:
        return True
    try:
        host = urlparse(origin.decode("latin-1")).hostname or ""
    except ValueError:
        return False
    return any(
        pattern == "*" or is_same_domain(host, pattern.strip("[]"))
        for pattern in [*settings.ALLOWED_HOSTS, *settings.WS_ALLOWED_ORIGINS]
    )


class WebsocketGate:
    """The handshake's checks in one coroutine: Host, Origin, then credentials.

    A token client (API clients, MSAL.js) skips the cookie and session layers.
    Everything happens in this one frame, on daphne's own scope, which belongs
    to this connection alone: a chain of ASGI middlewares would keep a
    suspended coroutine and a copy of the scope per layer for the whole life
    of every idle connection. A token validated recently is taken from the
    identity cache on the event loop (no thread, no database): in a reconnect
    storm every client of a token after the first costs a dictionary lookup.
    A refused token leaves ``scope["auth_error"]`` so the consumer can accept
    and close with 4401, which a browser can tell apart from a network fault.
    The server's own ``send`` is kept as ``scope["server_send"]`` (the hub
    writes frames straight to daphne's protocol behind it, see
    ``tasks.live.delivery``), before the session layer wraps it.
    """

    def __init__(self, consumer_class: Any) -> None:
        self.consumer_class = consumer_class
        self.by_session = SessionMiddlewareStack(SessionAuthMiddleware(self.consume))

    async def consume(self, scope: dict, receive: Any, send: Any) -> Any:
        return await self.consumer_class()(scope, receive, send)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        if not host_allowed(scope) or not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        scope["server_send"] = send
        raw = bearer_from_scope(scope)
        if raw is None:
            return await self.by_session(scope, receive, send)
        identity = cached_bearer(raw)
        if identity is None:
            try:
                identity = await database_sync_to_async(authenticate_bearer)(raw)
            except InvalidToken as exc:
                scope["auth_error"] = str(exc)
            except (OperationalError, InterfaceError):
                scope["dependency_error"] = "the database is unavailable"
        if identity is not None:
            scope["identity"] = identity
            scope["user"] = identity.user
        return await self.consumer_class()(scope, receive, send)
