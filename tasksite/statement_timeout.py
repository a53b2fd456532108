"""The web processes' statement timeout (``DATABASE_STATEMENT_TIMEOUT_MS``).

Only the web entry points (``wsgi.py``, ``asgi.py``) apply it, before the first
connection: a request that waits on a stuck statement should fail fast, but a
job, a purge or a migration may rightly run one for minutes. PostgreSQL takes
it at connect time (libpq ``options``), so it costs no round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

POSTGRESQL = "django.db.backends.postgresql"


def limit_statements(databases: Mapping[str, Any], milliseconds: int) -> None:
    """Add ``statement_timeout`` to every PostgreSQL connection's options (0: none)."""
    if milliseconds <= 0:
        return
    flag = f"-c statement_timeout={milliseconds}"
    for database in databases.values():
        if database.get("ENGINE") != POSTGRESQL:
            continue
        options = database.setdefault("OPTIONS", {})
        existing = options.get("options", "")
        if "statement_timeout" not in existing:
            options["options"] = f"{existing} {flag}".strip()
