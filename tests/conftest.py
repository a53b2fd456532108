"""Test setup: real PostgreSQL and Redis, checked up front so that a missing one fails.

``make test`` points ``DATABASE_URL`` and ``REDIS_URL`` at the machine's services, or
at throwaway ones (``scripts/test_services.py``). A run without them fails here rather
than skipping what needs them;
``ALLOW_EMBEDDED_TESTS=1`` runs the suite on the embedded default instead, for a
quick look on a machine without the services; the run says so at its start, since
what needs PostgreSQL or Redis then fails rather than proving anything.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.smtp_server import smtp_server
from tests.support.source_server import SAMPLE


def _worker_suffix() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def pytest_configure(config: pytest.Config) -> None:
    # Each test worker gets its own updates channel, so parallel daphne servers
    # never hear another worker's tasks.
    from django.conf import settings

    settings.TASK_UPDATES_CHANNEL = f"test:{uuid.uuid4().hex[:8]}:{_worker_suffix()}"
    # Launches in tests that start no worker leave their messages on a queue of
    # their own, emptied at the end, never on a queue a real worker reads.
    settings.CELERY_TASK_DEFAULT_QUEUE = f"test-unconsumed-{uuid.uuid4().hex[:8]}"
    # Alerts and notifications the tests' own writes enqueue: the same, never the real one.
    settings.ALERT_QUEUE = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-alerts"
    os.environ.setdefault("TASKSITE_QUIET_DEV_WARNING", "1")
    if os.environ.get("ALLOW_EMBEDDED_TESTS") == "1":
        return
    problems = []
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        problems.append("DATABASE_URL must point at PostgreSQL (make test sets it)")
    elif not _reachable(database_url, 5432):
        problems.append(f"PostgreSQL is not reachable at {_host_port(database_url, 5432)}")
    redis_url = os.environ.get("REDIS_URL", "")
    if not redis_url.startswith("redis://"):
        problems.append("REDIS_URL must point at Redis (make test sets it)")
    elif not _reachable(redis_url, 6379):
        problems.append(f"Redis is not reachable at {_host_port(redis_url, 6379)}")
    if problems:
        raise pytest.UsageError("tests need real services: " + "; ".join(problems))


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which services this run stands on, in its first lines."""
    if os.environ.get("ALLOW_EMBEDDED_TESTS") == "1":
        return [
            "EMBEDDED MODE (ALLOW_EMBEDDED_TESTS=1): SQLite and no Redis; tests that need "
            "PostgreSQL or Redis fail, and a green run here is not the suite's verdict"
        ]
    return [
        f"services: PostgreSQL at {_host_port(os.environ.get('DATABASE_URL', ''), 5432)}, "
        f"Redis at {_host_port(os.environ.get('REDIS_URL', ''), 6379)}"
    ]


def pytest_unconfigure(config: pytest.Config) -> None:
    from django.conf import settings

    if settings.REDIS_URL:
        try:
            redis.Redis.from_url(settings.REDIS_URL).delete(
                settings.CELERY_TASK_DEFAULT_QUEUE, settings.ALERT_QUEUE
            )
        except redis.RedisError:
            pass


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _reachable(url: str, default_port: int) -> bool:
    try:
        with socket.create_connection(_host_port(url, default_port), timeout=3):
            return True
    except OSError:
        return False


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("reader", password="pw-reader")


@pytest.fixture
def runner(django_user_model):
    from django.conf import settings
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user("runner", password="pw-runner")
    user.groups.add(Group.objects.get_or_create(name=settings.TASK_RUNNER_ROLE)[0])
    return user


@pytest.fixture
def token(user) -> str:
    from tasks.auth.bearer import issue_local_token

    return issue_local_token(user)


@pytest.fixture
def api(token):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def live(transactional_db):
    """A real daphne serving the project on the test database and Redis."""
    from tests.support.servers import running_daphne

    with running_daphne() as server:
        yield server


# -- shared by the operations tests ------------------------------------------------


@pytest.fixture
def sample_sources(settings, tmp_path):
    """The committed sample data as the sources; AP batches land in a temporary directory."""
    settings.SALES_SOURCE_URL = f"file://{SAMPLE / 'sales'}"
    settings.TIMECLOCK_SOURCE_URL = f"file://{SAMPLE / 'timeclock'}"
    settings.INVOICE_SOURCE_URL = f"file://{SAMPLE / 'invoices'}"
    settings.ACCOUNTING_TARGET_URL = f"file://{tmp_path / 'accounting'}"
    return tmp_path / "accounting"


@pytest.fixture
def tip_sources(sample_sources, settings):
    """The sample sources, with the roster and the tip policy of the tips jobs."""
    settings.ROSTER_SOURCE_URL = f"file://{SAMPLE / 'roster'}"
    settings.TIP_POLICY_FILE = SAMPLE / "tips" / "policies.json"
    return sample_sources


@pytest.fixture
def smtp(settings):
    """A real SMTP server on loopback, Django pointed at it (a module may define its own)."""
    with smtp_server() as server:
        server.configure(settings)
        yield server


@pytest.fixture
def queue(settings) -> Iterator[str]:
    name = f"test-ops-{uuid.uuid4().hex[:10]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = name
    yield name
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(name, f"{name}-beat:lock", f"{name}-beat:last-run")


@pytest.fixture
def doc_storage(settings, tmp_path) -> Path:
    """Document storage in a temporary directory (Django resets its storage cache)."""
    folder = tmp_path / "documents"
    settings.STORAGES = {
        **settings.STORAGES,
        "documents": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(folder)},
        },
    }
    return folder


@pytest.fixture
def sample_roster(settings, doc_storage) -> Path:
    settings.ROSTER_SOURCE_URL = f"file://{SAMPLE / 'roster'}"
    return doc_storage
