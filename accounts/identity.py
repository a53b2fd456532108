"""What a bearer token resolves to, whoever checked it: ``Identity`` or ``InvalidToken``.

``tasks.auth.bearer.authenticate_bearer`` (local API tokens) and
``accounts.entra.tokens`` (Entra ID access tokens) both produce these, and both
cache validated tokens in an ``IdentityCache``. This module imports nothing of
the project, so either side can import it at top level.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


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
