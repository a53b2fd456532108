"""``/readyz``: do this process's database and Redis answer? Asked at most once a second.

A load balancer polls it, unauthenticated, from many places at once: a query
and a ping per hit would make the probe itself a load, and a dependency that
hangs would hold a thread per hit. One probe runs at a time per process; its
answer serves every caller that waited on it, and a ready answer every caller
for ``READYZ_CACHE_SECONDS`` (after a not-ready one the next hit probes again, so
a recovery shows at once). The answer names the dependency that is down, never
an exception or a host: the log says why.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import connection

from .live import broadcast

logger = logging.getLogger(__name__)

OK = "ok"
UNAVAILABLE = "unavailable"

_lock = threading.Lock()
# (what was probed, when the probe ended, its answer): the targets are part of the
# key, so a probe of other settings (a test's override) is never served a stale one.
_last: tuple[tuple[str, ...], float, dict[str, str]] | None = None


def _targets() -> tuple[str, ...]:
    db = connection.settings_dict
    return (str(db.get("HOST")), str(db.get("PORT")), str(db.get("NAME")), settings.REDIS_URL)


def _select_one() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _probe() -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        try:
            _select_one()
        except Exception:
            # A kept connection the database dropped (it restarted) says nothing of
            # the database now: one more try on a new connection, never two timeouts.
            if connection.connection is None:
                raise
            connection.close()
            _select_one()
        checks["database"] = OK
    except Exception as exc:  # any failure means not ready
        logger.warning("not ready: database unavailable: %s", exc.__class__.__name__)
        checks["database"] = UNAVAILABLE
    if settings.REDIS_URL:
        try:
            broadcast.redis_client().ping()
            checks["redis"] = OK
        except Exception as exc:
            logger.warning("not ready: redis unavailable: %s", exc.__class__.__name__)
            checks["redis"] = UNAVAILABLE
    return checks


def check() -> dict[str, str]:
    """``{"database": "ok"|"unavailable", "redis": …}`` (redis only where configured)."""
    global _last
    targets = _targets()
    arrived = time.monotonic()
    with _lock:
        if _last is not None and _last[0] == targets:
            ended, answer = _last[1], _last[2]
            ready = all(value == OK for value in answer.values())
            # "ready" serves for the cache period; "not ready" only the callers that
            # waited on that very probe, so a recovery shows at the next hit.
            if (ready and arrived - ended < settings.READYZ_CACHE_SECONDS) or ended > arrived:
                return answer
        checks = _probe()
        _last = (targets, time.monotonic(), checks)
        return checks
