"""Django's database sessions, with a key checked before it reaches a query.

Django accepts any cookie value of eight characters or more as a session key;
one with a NUL byte makes PostgreSQL refuse the lookup (a 500 on every door,
before authentication). Django makes its keys from lowercase letters and digits,
so anything else is no session at all: the request goes on anonymous.
"""

from __future__ import annotations

import re

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore

_KEY = re.compile(r"[a-z0-9]{8,40}")


class SessionStore(DatabaseSessionStore):
    def _validate_session_key(self, key: str | None) -> bool:
        return bool(key) and _KEY.fullmatch(key or "") is not None
