"""WebSocket handshake: Origin check and credentials, through the REST code path."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator, WebsocketDenier
from channels.sessions import SessionMiddlewareStack
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import InterfaceError, OperationalError
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from accounts.identity import Identity, InvalidToken

from .identity import authenticate_bearer


def _bearer_from_scope(scope: dict) -> str | None:
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


class CredentialsMiddleware:
    """Sets ``scope["identity"]`` from a token, else from the session cookie.

    A client that presents a token (API clients, MSAL.js) skips the cookie and
    session layers: they would parse cookies, wrap ``send`` and copy the scope
    twice more, memory every idle connection keeps for its lifetime. A refused
    token leaves ``scope["auth_error"]`` so the consumer can accept and close
    with 4401, which a browser can tell apart from a network fault.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.by_session = SessionMiddlewareStack(SessionAuthMiddleware(inner))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        raw = _bearer_from_scope(scope)
        if raw is None:
            return await self.by_session(scope, receive, send)
        scope = dict(scope)
        try:
            identity = await database_sync_to_async(authenticate_bearer)(raw)
        except InvalidToken as exc:
            scope["auth_error"] = str(exc)
        except (OperationalError, InterfaceError):
            scope["dependency_error"] = "the database is unavailable"
        else:
            scope["identity"] = identity
            scope["user"] = identity.user
        return await self.inner(scope, receive, send)


class BrowserOriginValidator(OriginValidator):
    """Refuse a browser handshake from a foreign Origin; allow non-browser clients (no Origin).

    Allowed: the ``ALLOWED_HOSTS``, plus ``WS_ALLOWED_ORIGINS`` for browser
    applications served from another host that connect with a token.
    """

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        # Channels catches only a decode error while it parses the Origin: one that
        # urlparse cannot take ("http://[") would be a 500. Refused here instead.
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                try:
                    urlparse(value.decode("latin-1"))
                except ValueError:
                    return await WebsocketDenier()(scope, receive, send)
        return await super().__call__(scope, receive, send)

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)

    def validate_origin(self, parsed_origin: Any) -> bool:
        host = parsed_origin.hostname or ""
        return any(
            pattern == "*" or is_same_domain(host, pattern.strip("[]"))
            for pattern in [*settings.ALLOWED_HOSTS, *settings.WS_ALLOWED_ORIGINS]
        )


class AllowedHostValidator:
    """The WebSocket twin of Django's Host check, which HTTP requests get and daphne skips."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        host = next(
            (v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), None
        )
        if host is not None:
            domain, _port = split_domain_port(host)
            if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
                return await WebsocketDenier()(scope, receive, send)
        return await self.inner(scope, receive, send)


class ServerSendMiddleware:
    """Keeps the server's own ``send`` in the scope, before the session layer wraps it.

    The hub writes update frames straight to daphne's protocol behind it (see
    ``tasks.live.delivery``); the session wrapper only matters for HTTP cookies.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        return await self.inner(dict(scope, server_send=send), receive, send)


def websocket_security(inner: Any) -> Any:
    return ServerSendMiddleware(
        AllowedHostValidator(BrowserOriginValidator(CredentialsMiddleware(inner), ["*"]))
    )
