"""What makes a deployment "production", and which secret keys it refuses.

The secret key signs sessions, cursors and the document links (personal data):
a guessable one lets anyone forge a link. The embedded default (SQLite, no
Redis, a loopback host) may run on a development key; anything else must be
given a real one, or refuses to start. Pure functions of the environment's
values, so that settings.py stays the one place that reads it.
"""

from __future__ import annotations

DEVELOPMENT_SECRET_KEY = "development-only-secret-key-do-not-use-in-production"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
# Words of the example file's placeholders and of Django's generated insecure keys.
_PLACEHOLDER_WORDS = ("change", "example", "insecure", "secret-key", "placeholder")
# Django's own bar (security.W009): at least 50 characters, 5 distinct ones.
MIN_LENGTH = 50
MIN_UNIQUE_CHARACTERS = 5


def is_embedded_default(
    *, database_engine: str, redis_url: str, debug: bool, allowed_hosts: list[str]
) -> bool:
    """SQLite, no Redis, and either DEBUG or only loopback hosts: a single machine."""
    if redis_url or not database_engine.endswith("sqlite3"):
        return False
    return debug or all(host.strip().lower() in LOOPBACK_HOSTS for host in allowed_hosts)


def secret_key_problem(key: str) -> str | None:
    """Why ``key`` is not fit for production, or None when it is."""
    if not key:
        return "it is not set"
    if key == DEVELOPMENT_SECRET_KEY:
        return "it is the committed development key"
    lowered = key.lower()
    for word in _PLACEHOLDER_WORDS:
        if word in lowered:
            return f"it looks like a placeholder (contains {word!r})"
    if len(key) < MIN_LENGTH:
        return f"it is shorter than {MIN_LENGTH} characters"
    if len(set(key)) < MIN_UNIQUE_CHARACTERS:
        return f"it has fewer than {MIN_UNIQUE_CHARACTERS} distinct characters"
    return None


def refusal(problem: str) -> str:
    """The one line an operator reads when the service refuses to start."""
    return (
        f"SECRET_KEY refused: {problem}. A real one is required with PostgreSQL, Redis or "
        "a public host: python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )
