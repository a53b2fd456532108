"""The shipped layout (``deploy/stack.py``: nginx, gunicorn, daphne, a worker, the alerts
worker and beat) for a test module: on a queue and beat key of its own, with no
schedule firing but what a test asks for, its committed rows flushed after."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from deploy import stack as deploy_stack
from tests.support.servers import service_env

NEVER = "0 0 1 1 *"  # a cron that fires once a year: "not during a test"


@contextlib.contextmanager
def running_stack(
    name: str,
    tmp_path_factory: pytest.TempPathFactory,
    django_db_blocker: Any,
    *,
    daphnes: int,
    web_workers: int,
    **env: str,
) -> Iterator[deploy_stack.Stack]:
    if deploy_stack.find_nginx() is None:
        pytest.fail(deploy_stack.nginx_missing_message())
    queue = f"test-{name}-{uuid.uuid4().hex[:8]}"
    values = service_env(
        CELERY_QUEUE=queue,
        ALERT_QUEUE=f"{queue}-alerts",
        BEAT_LOCK_KEY=f"{queue}-beat",
        VAR_DIR=str(tmp_path_factory.mktemp(f"{name}-var")),
        # Nothing but what a test asks for runs.
        DAILY_SALES_SCHEDULE=NEVER,
        INVOICE_SYNC_SCHEDULE=NEVER,
        TRANSFORM_TIPS_SCHEDULE=NEVER,
        EMAIL_TIPS_SCHEDULE=NEVER,
        FOOD_HANDLER_PDFS_SCHEDULE=NEVER,
        FOOD_HANDLER_LINKS_SCHEDULE=NEVER,
        PURGE_SCHEDULE_SECONDS="3600",
        **env,
    )
    values.pop("ACCOUNTING_TARGET_URL", None)  # under the stack's own VAR_DIR
    running = deploy_stack.Stack(
        values, port=deploy_stack.free_port(), daphnes=daphnes, web_workers=web_workers
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()
        running.cleanup()
        redis.Redis.from_url(settings.REDIS_URL).delete(
            queue, f"{queue}-beat:lock", f"{queue}-beat:last-run"
        )
        with django_db_blocker.unblock():
            # What the stack's processes committed, as a transactional test would leave it
            # (never anything but a test database).
            from django.core.management import call_command
            from django.db import connection

            assert Path(connection.settings_dict["NAME"]).name.startswith("test")
            call_command("flush", interactive=False, verbosity=0)
