"""Who a bearer token belongs to: the one place that decides, for REST and WebSocket.

Local mode checks the project's own API tokens; Entra ID mode (``AZURE_TENANT_ID``
set) hands the token to ``tasks.auth.entra``. Callers see only ``Identity`` or
``InvalidToken``.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
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
    # False for the staff pages' session: its roles are the user's groups, not a token's.
    by_token: bool = True


class IdentityCache:
    """Validated tokens by digest, each kept until a deadline: an LRU bounded in size.

    The deadline is the token's ``exp`` unless a shorter one is given (local
    tokens have no ``exp``; their deadline bounds how long a revoked one lives).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[bytes, tuple[Identity, float | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> Identity | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            identity, until = item
            if until is not None and until <= time.time():
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return identity

    def put(self, key: bytes, identity: Identity, *, until: float | None = None) -> None:
        with self._lock:
            self._items[key] = (identity, identity.expires_at if until is None else until)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


TOKEN_PREFIX = "tsk_"
# A busy client costs one token lookup per this many seconds, not one per
# request; a revoked token or a deactivated user is refused within it.
_local_cache = IdentityCache(10_000)


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
    digest = hash_token(raw)
    key = digest.encode()
    identity = _local_cache.get(key)
    if identity is not None:
        return identity
    token = ApiToken.objects.select_related("user").filter(key_hash=digest).first()
    if token is None or not token.user.is_active:
        raise InvalidToken()
    # The user's groups are its roles, read once per cache period like the token.
    identity = Identity(user=token.user,
                        roles=frozenset(token.user.groups.values_list("name", flat=True)))
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
        from tasks.auth.entra import authenticate_entra_token

        return authenticate_entra_token(raw)
    return _authenticate_local(raw)
