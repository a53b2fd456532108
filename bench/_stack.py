"""What the store benchmarks (rest, ingest, purge) share: a database, servers, children.

The benchmark process itself never sets Django up: it talks to PostgreSQL with
psycopg (fast loads with ``INSERT ... SELECT generate_series``) and runs every
piece of the project in child processes (``bench._children``), so the figures
are those of separate processes, as in production, and a part can never leave
Django configured on the wrong database for the next one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.common import ROOT, wait_http

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_store"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"
TABLE = "tasks_taskstatus"
OPERATIONS = (
    "daily_sales",
    "invoice_sync",
    "update_food_handler_pdfs",
    "transform_tips",
    "get_mpvs",
    "get_food_handler_links",
    "email_tips",
)
MIGRATING_APPS = ("tasks", "operations", "accounts")
_migrated: set[str] = set()


def add_stack_arguments(parser: Any) -> None:
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument(
        "--no-record",
        action="store_true",
        help="print only, write no results file (the smoke tests)",
    )


def stack_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of every child: the bench's own database, Redis db and channel."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "tasksite.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "TASK_UPDATES_CHANNEL": f"bench:{uuid.uuid4().hex[:10]}",
            "CELERY_QUEUE": f"bench-{uuid.uuid4().hex[:10]}",
            # A SECRET_KEY turns DEBUG off, as in production (DEBUG keeps every query).
            "SECRET_KEY": "bench-" + "k" * 50,
            "TASKSITE_QUIET_DEV_WARNING": "1",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


def connect(database_url: str):
    """A psycopg connection in autocommit, for loading rows and plain-SQL baselines."""
    import psycopg

    return psycopg.connect(_libpq_url(database_url), autocommit=True)


def _libpq_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))


def prepare_database(database_url: str, redis_url: str) -> None:
    """Create the benchmark database if missing and migrate it if it is behind."""
    if database_url in _migrated:
        return
    import psycopg

    name = urlsplit(database_url).path.lstrip("/")
    admin = urlunsplit(("postgresql", urlsplit(database_url).netloc, "/postgres", "", ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    if not _migrations_applied(database_url):
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=stack_env(database_url, redis_url),
            check=True,
        )
    _migrated.add(database_url)


def _migrations_applied(database_url: str) -> bool:
    wanted = {
        (app, path.stem)
        for app in MIGRATING_APPS
        for path in (ROOT / app / "migrations").glob("[0-9]*.py")
    }
    with connect(database_url) as conn:
        if conn.execute("SELECT to_regclass('django_migrations')").fetchone()[0] is None:
            return False
        applied = set(conn.execute("SELECT app, name FROM django_migrations").fetchall())
    return wanted <= applied


def load_tasks(conn, count: int, *, expired: bool = False, tag: str = "bench") -> float:
    """Insert ``count`` task rows in one statement; returns the seconds it took.

    Operations rotate over the seven, created_at is spread over the last days
    (newest first is then a real index walk), expired rows expire in the past.
    """
    started = time.perf_counter()
    now = time.time()
    expires = "%(now)s - 60 - i" if expired else "%(now)s + 604800"
    conn.execute(
        f"""
        INSERT INTO {TABLE} (task_id, operation, status, progress_current, progress_total,
            progress_message, result, error, created_at, updated_at, expires_at, version,
            error_count, request_id, launched_by, params, cancel_requested_by)
        SELECT gen_random_uuid(), (%(ops)s::text[])[1 + i %% 7], 'completed', i %% 100, 100,
            'Location ' || (i %% 100) || ' of 100', '{{"locations": 100}}'::jsonb, NULL,
            %(now)s - 700000 + i * 0.005, %(now)s - 700000 + i * 0.005 + 30, {expires}, 3,
            0, '', %(tag)s, '{{}}'::jsonb, ''
        FROM generate_series(1, %(count)s) AS i
        """,
        {"ops": list(OPERATIONS), "now": now, "count": count, "tag": tag},
    )
    return time.perf_counter() - started


def api_token(conn, username: str = "bench-reader") -> str:
    """A local-mode API token for a plain (non-staff) user, written as the project stores it.

    The user holds every personal-data reader role, so it reads all seven operations
    through the role check rather than around it as staff would.
    """
    import secrets

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tasksite.settings")
    django.setup()  # the role names come from settings, the token format from tasks.auth
    from django.conf import settings

    from tasks.auth.bearer import TOKEN_PREFIX, hash_token

    user = conn.execute(
        "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,"
        " is_staff, is_active, date_joined) VALUES ('!', false, %s, '', '', '', false, true, now())"
        " ON CONFLICT (username) DO UPDATE SET is_active = true RETURNING id",
        [username],
    ).fetchone()[0]
    for role in sorted(set(settings.PERSONAL_DATA_READER_ROLES.values())):
        group = conn.execute(
            "INSERT INTO auth_group (name) VALUES (%s) ON CONFLICT (name) DO UPDATE "
            "SET name = EXCLUDED.name RETURNING id",
            [role],
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO auth_user_groups (user_id, group_id) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING",
            [user, group],
        )
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO tasks_apitoken (user_id, name, key_hash, created)"
        " VALUES (%s, 'bench', %s, now())",
        [user, hash_token(raw)],
    )
    return raw


def reset_table(conn) -> None:
    conn.execute(f"TRUNCATE {TABLE}")


def settle(conn) -> None:
    """Vacuum, analyze and checkpoint, so every measured run starts from the same state."""
    conn.execute(f"VACUUM ANALYZE {TABLE}")
    conn.execute("CHECKPOINT")


@contextlib.contextmanager
def running(
    command: list[str], env: dict[str, str], *, health: str | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen]:
    """Start ``command`` in its own process group and always stop the whole group."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        if health:
            wait_http(health, proc=proc)
        yield proc
    finally:
        stop_group(proc)
        if log:
            out.close()


def stop_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the child's own process group (servers fork workers), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def child(role: str, env: dict[str, str], **params: Any) -> subprocess.Popen:
    """Start ``python -m bench._children <role>``; its parameters go as a JSON line on stdin."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._children", role],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    proc.stdin.write(json.dumps(params) + "\n")
    proc.stdin.flush()
    return proc


def read_json_line(proc: subprocess.Popen) -> dict[str, Any]:
    """The next JSON line a child prints (children print nothing else on stdout)."""
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child exited ({proc.wait()}) without answering")
        if line.startswith("{"):
            return json.loads(line)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
