"""DRF authentication classes (which ones apply is chosen in settings), and how the
API schema names them."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from accounts.identity import InvalidToken

from .bearer import authenticate_bearer


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <token>``: a local API token or an Entra ID access token."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != b"bearer":
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("malformed Authorization header")
        try:
            identity = authenticate_bearer(header[1].decode("latin-1"))
        except InvalidToken as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        request.identity = identity
        return identity.user, identity

    def authenticate_header(self, request) -> str:
        if authentication.get_authorization_header(request):
            return 'Bearer realm="task-status", error="invalid_token"'
        return 'Bearer realm="task-status"'


class SessionAuthentication(authentication.SessionAuthentication):
    """The staff pages' session, with DRF's CSRF check for unsafe methods."""


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """The schema's name for the bearer token: a local API token or an Entra ID one."""

    target_class = BearerTokenAuthentication
    name = "bearer"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A local API token (tsk_…) or a Microsoft Entra ID access token.",
        }


class SessionScheme(OpenApiAuthenticationExtension):
    """The staff pages' session cookie (unsafe methods also need the CSRF token)."""

    target_class = SessionAuthentication
    name = "session"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}
