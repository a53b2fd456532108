"""The embedded default: with no REDIS_URL, jobs and the schedule run inside the server.

Celery's own machinery, not a second execution path: a WorkController with the
``solo`` pool consumes the ``memory://`` broker in a thread of this process, and
Celery's threaded beat service sends the schedule. A job launched over REST is
the same Celery task, run by the same ``operations.runner`` code, as on a real
worker.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from celery import current_app
from django.conf import settings
from django.utils import timezone

from tasks.models import TERMINAL_STATUSES, TaskStatus

from .models import JobRun
from .runner import _fail_task

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_started: dict[str, Any] = {}


def start_embedded_worker(*, beat: bool = True) -> Any:
    """Start the in-process worker (and beat) once; returns the WorkController.

    Safe to call more than once. Refuses to run against a real broker: there,
    separate ``celery worker`` and ``celery beat`` processes do this job.
    """
    from celery.beat import EmbeddedService

    with _lock:
        if "worker" in _started:
            return _started["worker"]
        if settings.REDIS_URL or not current_app.conf.broker_url.startswith("memory://"):
            raise RuntimeError(
                "the embedded worker is only for the memory:// broker (REDIS_URL unset)"
            )
        current_app.loader.import_default_modules()
        _require_migrated_database()
        fail_orphans()
        worker = current_app.WorkController(
            pool_cls="solo",
            concurrency=1,
            hostname=f"embedded@{socket.gethostname()}",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="INFO",
        )
        thread = threading.Thread(target=worker.start, name="celery-embedded-worker", daemon=True)
        thread.start()
        _started.update(worker=worker, thread=thread)
        if beat:
            service = EmbeddedService(
                current_app._get_current_object(),
                thread=True,
                scheduler_cls="operations.beat:LockedScheduler",
            )
            service.start()
            _started["beat"] = service
        logger.info(
            "embedded Celery worker%s started (memory:// broker)", " and beat" if beat else ""
        )
        return worker


def stop_embedded_worker() -> None:
    """Stop what ``start_embedded_worker`` started (tests, server shutdown)."""
    with _lock:
        service = _started.pop("beat", None)
        if service is not None:
            service.stop()
        worker = _started.pop("worker", None)
        thread = _started.pop("thread", None)
        if worker is not None:
            worker.stop(in_sighandler=False)
        if thread is not None:
            thread.join(timeout=10)


def _require_migrated_database() -> None:
    """Stop with one clear line, not a traceback, when the database is not set up yet."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        raise SystemExit(
            "the database has unapplied migrations: run `make migrate` "
            "(python manage.py migrate) first; `make run` does both"
        )


def fail_orphans() -> int:
    """Queued messages of the memory broker die with the process: fail their tasks.

    A task that was ``started`` or running when the server stopped would
    otherwise stay unfinished forever.
    """
    orphans = 0
    for task_id in TaskStatus.objects.exclude(status__in=TERMINAL_STATUSES).values_list(
        "task_id", flat=True
    ):
        JobRun.objects.filter(task_id=str(task_id), finished_at__isnull=True).update(
            outcome="server restarted", finished_at=timezone.now()
        )
        if _fail_task(str(task_id), "server restarted before the job finished"):
            orphans += 1
    return orphans
