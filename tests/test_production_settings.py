"""Production settings refuse a weak secret key and pass ``check --deploy``.

Each case starts ``manage.py check`` in a process of its own with the
environment an operator would give it: settings are read once per process.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tasksite.production import DEVELOPMENT_SECRET_KEY
from tests.support.servers import ROOT

# What a test may set; everything else of the suite's environment is left out.
_SETTINGS_ENV = (
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "TASKSITE_QUIET_DEV_WARNING",
    # Set in this process by the browser tests' Playwright (tests/support/browser.py),
    # never by a deployment: check --deploy rightly refuses it (async.E001).
    "DJANGO_ALLOW_ASYNC_UNSAFE",
)


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in _SETTINGS_ENV}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, "VAR_DIR": str(tmp_path / "var"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def real_key() -> str:
    return secrets.token_urlsafe(50)


def example_environment() -> dict[str, str]:
    """deploy/tasksite.env.example as systemd reads it (KEY=value, optional double quotes)."""
    values = {}
    for line in (ROOT / "deploy" / "tasksite.env.example").read_text().splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        values[key] = value
    return values


PRODUCTION_SHAPES = {
    "postgres": {"DATABASE_URL": "postgres://tasks@127.0.0.1:5432/tasks"},
    "redis": {"REDIS_URL": "redis://127.0.0.1:6379/0"},
    "public host": {"DEBUG": "0", "ALLOWED_HOSTS": "tasks.example.com"},
}

WEAK_KEYS = {
    "the example file's placeholder": "CHANGE-ME",
    "a longer placeholder": "please-change-me-" + "x1y2z3" * 10,
    "an example": "example-" + secrets.token_urlsafe(50),
    "Django's generated insecure key": "django-insecure-" + secrets.token_urlsafe(50),
    "the committed development key": DEVELOPMENT_SECRET_KEY,
    "a short key": secrets.token_urlsafe(20),
    "too few distinct characters": "abcd" * 20,
}


@pytest.mark.parametrize("shape", PRODUCTION_SHAPES)
def test_production_without_a_secret_key_refuses_to_start(shape, tmp_path):
    done = manage(tmp_path, "check", **PRODUCTION_SHAPES[shape])
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "SECRET_KEY refused: it is not set" in last, done.stderr[-2000:]
    assert "token_urlsafe" in last  # and says how to make one


@pytest.mark.parametrize("weak", WEAK_KEYS)
def test_production_with_a_weak_secret_key_refuses_to_start(weak, tmp_path):
    key = WEAK_KEYS[weak]
    done = manage(tmp_path, "check", SECRET_KEY=key, **PRODUCTION_SHAPES["postgres"])
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "SECRET_KEY refused" in last, done.stderr[-2000:]
    assert key not in done.stderr  # the refusal never prints the key it refused


@pytest.mark.parametrize("shape", PRODUCTION_SHAPES)
def test_production_with_a_real_key_starts(shape, tmp_path):
    done = manage(tmp_path, "check", SECRET_KEY=real_key(), **PRODUCTION_SHAPES[shape])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no issues" in done.stdout
    assert "development key" not in done.stderr


def test_the_embedded_default_runs_on_the_development_key_with_a_warning(tmp_path):
    done = manage(tmp_path, "check")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning: SECRET_KEY is not set; using a development key" in done.stderr


def test_check_deploy_is_clean_with_the_example_environment_and_a_real_key(tmp_path):
    """The shipped example (a real key filled in) passes every deployment check."""
    env = {
        **example_environment(),
        "SECRET_KEY": real_key(),
        "VAR_DIR": str(tmp_path / "var"),
    }
    done = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **env)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "System check identified no issues" in done.stdout, done.stdout


def test_check_deploy_with_the_example_placeholder_key_refuses(tmp_path):
    env = {**example_environment(), "VAR_DIR": str(tmp_path / "var")}
    assert env["SECRET_KEY"] == "CHANGE-ME"
    done = manage(tmp_path, "check", "--deploy", **env)
    assert done.returncode != 0
    assert "SECRET_KEY refused" in done.stderr.strip().splitlines()[-1]


def test_production_settings_are_secure_by_default(tmp_path):
    """Cookies Secure, HSTS a year on subdomains, the proxy's scheme believed."""
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, "
        "s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_PROXY_SSL_HEADER, s.X_FRAME_OPTIONS)"
    )
    env = {"DJANGO_SETTINGS_MODULE": "tasksite.settings"}
    production = manage(
        tmp_path,
        "shell",
        "-v",
        "0",
        "-c",
        code,
        SECRET_KEY=real_key(),
        **env,
        **PRODUCTION_SHAPES["redis"],
    )
    assert production.returncode == 0, production.stderr[-2000:]
    assert production.stdout.split() == [
        "True",
        "True",
        "31536000",
        "True",
        "('HTTP_X_FORWARDED_PROTO',",
        "'https')",
        "DENY",
    ]
    embedded = manage(tmp_path, "shell", "-v", "0", "-c", code, **env)
    assert embedded.stdout.split()[:3] == ["False", "False", "0"], embedded.stderr[-2000:]
