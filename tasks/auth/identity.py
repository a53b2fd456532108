"""Who a bearer token belongs to: the one place that decides, for REST and WebSocket.

Local mode checks the project's own API tokens; Entra ID mode (``AZURE_TENANT_ID``
set) hands the token to ``tasks.auth.entra``. Callers see only ``Identity`` or
``InvalidToken``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings


class InvalidToken(Exception):
    """The token was refused. The message is safe to show; it never says why in detail."""

    def __init__(self, message: str = "invalid or expired token") -> None:
        super().__init__(message)


@dataclass(frozen=True)
class Identity:
    user: Any
    expires_at: float | None = None
    roles: frozenset[str] = field(default_factory=frozenset)


TOKEN_PREFIX = "tsk_"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def issue_local_token(user: Any, *, name: str = "") -> str:
    """Create a local-mode API token for ``user``; the raw value is shown once."""
    from tasks.models import ApiToken

    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, name=name, key_hash=hash_token(raw))
    return raw


def _authenticate_local(raw: str) -> Identity:
    from tasks.models import ApiToken

    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        raise InvalidToken()
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_token(raw)).first()
    if token is None or not token.user.is_active:
        raise InvalidToken()
    return Identity(user=token.user)


def authenticate_bearer(raw: str) -> Identity:
    """Resolve a bearer token to an identity, or raise ``InvalidToken``."""
    raw = (raw or "").strip()
    if not raw:
        raise InvalidToken("no token")
    if settings.ENTRA_MODE:
        from tasks.auth.entra import authenticate_entra_token

        return authenticate_entra_token(raw)
    return _authenticate_local(raw)
