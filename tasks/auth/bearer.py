"""The bearer entry point: who a token belongs to, for REST and WebSocket alike, and the
project's own API tokens (issued, hashed, forgotten).

Local mode checks those tokens; Entra ID mode (``AZURE_TENANT_ID`` set) hands the
token to ``accounts.entra.tokens``. What either resolves to, ``Identity`` or
``InvalidToken``, and its cache are identity's one home, ``accounts.identity``
(below ``tasks``, so Entra ID's code can use it too); they are re-exported here.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from django.conf import settings

from accounts.entra.tokens import authenticate_entra_token, cached_entra_identity
from accounts.identity import Identity, IdentityCache, InvalidToken
from tasks.models import ApiToken

__all__ = [
    "TOKEN_PREFIX",
    "Identity",
    "IdentityCache",
    "InvalidToken",
    "authenticate_bearer",
    "cached_bearer",
    "forget_local_tokens",
    "hash_token",
    "issue_local_token",
]

TOKEN_PREFIX = "tsk_"
# A busy client costs one token lookup per this many seconds, not one per
# request; a revoked token or a deactivated user is refused within it.
_local_cache = IdentityCache(10_000)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def issue_local_token(user: Any, *, name: str = "") -> str:
    """Create a local-mode API token for ``user``; the raw value is shown once."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, name=name, key_hash=hash_token(raw))
    return raw


def _authenticate_local(raw: str) -> Identity:
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        raise InvalidToken()
    digest = hash_token(raw)
    key = digest.encode()
    identity = _local_cache.get(key)
    if identity is not None:
        return identity
    token = ApiToken.objects.select_related("user").filter(key_hash=digest).first()
    if token is None or not token.user.is_active:
        raise InvalidToken()
    # The user's groups are its roles, read once per cache period like the token.
    identity = Identity(
        user=token.user, roles=frozenset(token.user.groups.values_list("name", flat=True))
    )
    _local_cache.put(key, identity, until=time.time() + settings.API_TOKEN_CACHE_SECONDS)
    return identity


def forget_local_tokens() -> None:
    """Drop cached local identities (a revocation that must take effect at once; tests)."""
    _local_cache.clear()


def authenticate_bearer(raw: str) -> Identity:
    """Resolve a bearer token to an identity, or raise ``InvalidToken``."""
    raw = (raw or "").strip()
    if not raw:
        raise InvalidToken("no token")
    if settings.ENTRA_MODE:
        return authenticate_entra_token(raw)
    return _authenticate_local(raw)


def cached_bearer(raw: str) -> Identity | None:
    """The identity of a token checked recently and still cached, else None.

    No database, no network and nothing that blocks: the WebSocket handshake
    asks this on the event loop first and hands only a miss to a thread.
    """
    raw = (raw or "").strip()
    if not raw:
        return None
    if settings.ENTRA_MODE:
        return cached_entra_identity(raw)
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    return _local_cache.get(hash_token(raw).encode())
