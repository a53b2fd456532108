"""Settings for the task status service.

Every knob comes from the environment, here and nowhere else, with defaults
that make a complete single-machine service: SQLite under ``var/``, the
in-process channel layer and an in-process Celery worker.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import dj_database_url
import dj_email_url
from django.core.exceptions import ImproperlyConfigured

from tasksite import production

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# Off unless asked for: a debug page is HTML listing every URL, and the
# contract promises JSON errors on the embedded default too.
DEBUG = env_bool("DEBUG", False)
# Checked below, once the database and Redis are known (tasksite/production.py).
SECRET_KEY = os.environ.get("SECRET_KEY", "")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Hosts of browser applications elsewhere that may open the WebSocket (with a token).
WS_ALLOWED_ORIGINS = env_list("WS_ALLOWED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    # Swagger UI's files, served by us (whitenoise) rather than from a public CDN.
    "drf_spectacular_sidecar",
    "channels",
    "django_auth_adfs",
    "tasks",
    "operations",
    "accounts",
]

MIDDLEWARE = [
    "tasks.middleware.RequestIDMiddleware",
    "tasks.middleware.NulByteGuardMiddleware",
    "tasks.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "tasks.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Database sessions whose keys are checked before a query (accounts/sessions.py).
SESSION_ENGINE = "accounts.sessions"

ROOT_URLCONF = "tasksite.urls"
# The REST paths answer with and without a trailing slash (see tasks/urls.py);
# no redirect may ever be issued for them.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "tasksite.asgi.application"
WSGI_APPLICATION = "tasksite.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'tasks.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Jobs in worker threads write while daphne reads: WAL and a busy timeout
    # keep SQLite from answering "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file, not memory, so that tests' server and job processes share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
# A database that stops answering is a fast 503, not a request held until gunicorn's
# own timeout: every process gives up connecting after DATABASE_CONNECT_TIMEOUT_SECONDS,
# and the web processes (tasksite/wsgi.py, asgi.py; not workers, beat or manage.py,
# whose jobs and migrations may rightly run long) cancel a statement after
# DATABASE_STATEMENT_TIMEOUT_MS (0: never). tcp_user_timeout drops a connection whose
# server vanished mid-query (nothing acknowledged) rather than wait for TCP to give up.
DATABASE_CONNECT_TIMEOUT_SECONDS = env_int("DATABASE_CONNECT_TIMEOUT_SECONDS", 5)
DATABASE_STATEMENT_TIMEOUT_MS = env_int("DATABASE_STATEMENT_TIMEOUT_MS", 30000)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        connect_timeout=DATABASE_CONNECT_TIMEOUT_SECONDS,
        tcp_user_timeout=DATABASE_CONNECT_TIMEOUT_SECONDS * 1000,
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The embedded default (SQLite, no Redis, a loopback host) may run on the development
# key, with a warning; anything else refuses to start without a real one, since the
# key signs sessions, cursors and the document links.
EMBEDDED_DEFAULT = production.is_embedded_default(
    database_engine=DATABASES["default"]["ENGINE"],
    redis_url=REDIS_URL,
    debug=DEBUG,
    allowed_hosts=ALLOWED_HOSTS,
)
_key_problem = production.secret_key_problem(SECRET_KEY)
if _key_problem and not EMBEDDED_DEFAULT:
    raise ImproperlyConfigured(production.refusal(_key_problem))
if not SECRET_KEY:
    SECRET_KEY = production.DEVELOPMENT_SECRET_KEY
    if not os.environ.get("TASKSITE_QUIET_DEV_WARNING"):
        sys.stderr.write("warning: SECRET_KEY is not set; using a development key\n")
        os.environ["TASKSITE_QUIET_DEV_WARNING"] = "1"

# Security (README, "Security"): secure by default everywhere but the embedded default.
# TLS ends at the proxy, which sets X-Forwarded-Proto and redirects plain HTTP itself:
# Django redirecting too would also redirect the loopback scrapes of /metrics and the
# probes of /healthz, so SECURE_SSL_REDIRECT stays off and check --deploy's W008 is
# silenced while it does. HSTS preload is a decision for the registered domain (the
# browsers' list takes no subdomain), so it is off and W021 silenced while it is.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not EMBEDDED_DEFAULT)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not EMBEDDED_DEFAULT)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if EMBEDDED_DEFAULT else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SILENCED_SYSTEM_CHECKS = [
    *([] if SECURE_SSL_REDIRECT else ["security.W008"]),
    *([] if SECURE_HSTS_PRELOAD else ["security.W021"]),
]
# Sent on every HTML answer, the admin and /api/docs included (tasks/middleware.py).
# No form-action: Entra ID's sign-out is a form whose answer redirects to the
# authority, which browsers check against form-action too.
CONTENT_SECURITY_POLICY = os.environ.get("CONTENT_SECURITY_POLICY") or (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "frame-ancestors 'none'"
)

# /readyz probes the database and Redis at most this often per process (tasks/readiness.py).
READYZ_CACHE_SECONDS = float(os.environ.get("READYZ_CACHE_SECONDS", "1"))

# Task status
# The Redis pub/sub channel that carries every update (one PUBLISH per change).
TASK_UPDATES_CHANNEL = os.environ.get("TASK_UPDATES_CHANNEL", "task-status:updates")
TASK_STATUS_TTL = env_int("TASK_STATUS_TTL", 604800)
# Liveness: a task not finished whose reporter wrote nothing and sent no heartbeat for
# TASK_STALE_SECONDS (per operation: "op=seconds,…" in TASK_STALE_SECONDS_BY_OPERATION)
# ends "failed". An open handle beats every TASK_HEARTBEAT_SECONDS; the check runs on
# beat every TASK_STALE_CHECK_SECONDS.
TASK_STALE_SECONDS = env_int("TASK_STALE_SECONDS", 900)
TASK_STALE_SECONDS_BY_OPERATION = {
    op.strip(): int(seconds)
    for op, _, seconds in (
        item.partition("=") for item in env_list("TASK_STALE_SECONDS_BY_OPERATION", [])
    )
    if seconds.strip().isdigit()
}
TASK_HEARTBEAT_SECONDS = float(os.environ.get("TASK_HEARTBEAT_SECONDS", "60"))
TASK_STALE_CHECK_SECONDS = float(os.environ.get("TASK_STALE_CHECK_SECONDS", "60"))
# How long a status change (error, complete, fail) is retried while the database is
# unreachable before the reporter gives up.
TRACKER_RETRY_SECONDS = float(os.environ.get("TRACKER_RETRY_SECONDS", "60"))
# Progress reported faster than this (seconds) is coalesced per task.
TASK_PROGRESS_MIN_INTERVAL = float(os.environ.get("TASK_PROGRESS_MIN_INTERVAL", "0.1"))
WS_MAX_SUBSCRIPTIONS = env_int("WS_MAX_SUBSCRIPTIONS", 100)
# A client whose unsent backlog stays above the high-water mark this long is cut off (4013).
WS_SLOW_CLIENT_SECONDS = float(os.environ.get("WS_SLOW_CLIENT_SECONDS", "10"))
WS_SEND_HIGH_WATER = env_int("WS_SEND_HIGH_WATER", 1024 * 1024)
WS_OUTBOX_LIMIT = env_int("WS_OUTBOX_LIMIT", 5000)
WS_MAX_MESSAGE_SIZE = 65536
DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE = WS_MAX_MESSAGE_SIZE

# Prometheus metrics (README, "Metrics"): /metrics of gunicorn and each daphne, and
# the exporters of a Celery worker and beat, answer only "Authorization: Bearer
# <METRICS_TOKEN>" (404 without it, and whenever the token is unset). The exporters
# listen on METRICS_ADDR at WORKER_METRICS_PORT / BEAT_METRICS_PORT (0: off).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_ADDR = os.environ.get("METRICS_ADDR", "127.0.0.1")
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0)
BEAT_METRICS_PORT = env_int("BEAT_METRICS_PORT", 0)

# Authentication: Entra ID when a tenant is configured, Django's own users otherwise.
AZURE_TENANT_ID = os.environ.get("AZURE_TENANT_ID", "")
AZURE_CLIENT_ID = os.environ.get("AZURE_CLIENT_ID", "")
AZURE_CLIENT_SECRET = os.environ.get("AZURE_CLIENT_SECRET", "")
AZURE_AUDIENCE = os.environ.get("AZURE_AUDIENCE") or (
    f"api://{AZURE_CLIENT_ID}" if AZURE_CLIENT_ID else ""
)
AZURE_AUTHORITY_HOST = os.environ.get("AZURE_AUTHORITY_HOST", "login.microsoftonline.com")
AZURE_CA_BUNDLE = os.environ.get("AZURE_CA_BUNDLE", "")
TASK_ADMIN_ROLE = os.environ.get("TASK_ADMIN_ROLE", "TaskStatus.Admin")
TASK_RUNNER_ROLE = os.environ.get("TASK_RUNNER_ROLE", "TaskStatus.Run")
ENTRA_MODE = bool(AZURE_TENANT_ID)
# Local API tokens: how long a validated one is trusted without a lookup.
API_TOKEN_CACHE_SECONDS = float(os.environ.get("API_TOKEN_CACHE_SECONDS", "30"))

AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
if ENTRA_MODE:
    # The token decides: staff pages sign in through Entra ID only (accounts/entra/tokens.py).
    AUTHENTICATION_BACKENDS = ["accounts.entra.tokens.EntraAuthCodeBackend"]
# django-auth-adfs checks AUTH_ADFS at import, so it is always defined.
AUTH_ADFS: dict[str, Any] = {
    "TENANT_ID": AZURE_TENANT_ID or "local-mode",
    "CLIENT_ID": AZURE_CLIENT_ID or "local-mode",
    "CLIENT_SECRET": AZURE_CLIENT_SECRET or None,
    "AUDIENCE": AZURE_AUDIENCE or "local-mode",
    "RELYING_PARTY_ID": AZURE_CLIENT_ID or "local-mode",
    "CLAIM_MAPPING": {"email": "email"},
    "USERNAME_CLAIM": "preferred_username",
    "GROUPS_CLAIM": "roles",
    "MIRROR_GROUPS": True,
    "LOGIN_EXEMPT_URLS": [],
    # Authority host, CA file and v2.0 endpoints from the AZURE_* settings above.
    "SETTINGS_CLASS": "accounts.entra.adfs_settings.EntraSettings",
}

LOGIN_URL = "django_auth_adfs:login" if ENTRA_MODE else "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tasks.auth.drf.BearerTokenAuthentication",
        "tasks.auth.drf.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["tasks.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "tasks.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# What tasksite_build_info says this deployment runs (set by the deploy, e.g. a git tag).
TASKSITE_VERSION = os.environ.get("TASKSITE_VERSION", "dev")

SPECTACULAR_SETTINGS = {
    "TITLE": "Task status service",
    "DESCRIPTION": "Progress of the back office's long-running jobs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Our own static files (drf-spectacular-sidecar), pinned, and allowed by the CSP.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",  # the library's default
        "tasks.schema.contract_paths",
    ],
}

# Jobs: Celery on Redis, or in-process when no broker is configured.
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"  # a host, or kombu warns at start
CELERY_TASK_ALWAYS_EAGER = False
JOB_MAX_SECONDS = env_int("JOB_MAX_SECONDS", 3600)
DAILY_SALES_SCHEDULE = os.environ.get("DAILY_SALES_SCHEDULE", "30 4 * * *")
INVOICE_SYNC_SCHEDULE = os.environ.get("INVOICE_SYNC_SCHEDULE", "*/30 * * * *")
# Tips: the previous pay week, transformed early on Monday and emailed once it is.
TRANSFORM_TIPS_SCHEDULE = os.environ.get("TRANSFORM_TIPS_SCHEDULE", "0 5 * * 1")
EMAIL_TIPS_SCHEDULE = os.environ.get("EMAIL_TIPS_SCHEDULE", "0 9 * * 1")
# Food handler certificates nightly, then fresh links for the managers.
FOOD_HANDLER_PDFS_SCHEDULE = os.environ.get("FOOD_HANDLER_PDFS_SCHEDULE", "0 3 * * *")
FOOD_HANDLER_LINKS_SCHEDULE = os.environ.get("FOOD_HANDLER_LINKS_SCHEDULE", "30 3 * * *")
PURGE_SCHEDULE_SECONDS = env_int("PURGE_SCHEDULE_SECONDS", 300)
SALES_SOURCE_URL = os.environ.get(
    "SALES_SOURCE_URL", f"file://{BASE_DIR / 'sample_data' / 'sales'}"
)
TIMECLOCK_SOURCE_URL = os.environ.get(
    "TIMECLOCK_SOURCE_URL", f"file://{BASE_DIR / 'sample_data' / 'timeclock'}"
)
INVOICE_SOURCE_URL = os.environ.get(
    "INVOICE_SOURCE_URL", f"file://{BASE_DIR / 'sample_data' / 'invoices'}"
)
ACCOUNTING_TARGET_URL = os.environ.get("ACCOUNTING_TARGET_URL", f"file://{VAR_DIR / 'accounting'}")
ROSTER_SOURCE_URL = os.environ.get(
    "ROSTER_SOURCE_URL", f"file://{BASE_DIR / 'sample_data' / 'roster'}"
)
# The tip-pool policy per location (which jobs share, their points): a committed
# file, edited and reviewed like code (docs/jobs.md, "transform_tips").
TIP_POLICY_FILE = Path(
    os.environ.get("TIP_POLICY_FILE", BASE_DIR / "sample_data" / "tips" / "policies.json")
)
SOURCE_TOKEN = os.environ.get("SOURCE_TOKEN", "")
# Sources: every HTTP request is bounded (timeout x retries with backoff).
SOURCE_TIMEOUT_SECONDS = float(os.environ.get("SOURCE_TIMEOUT_SECONDS", "30"))
SOURCE_MAX_RETRIES = env_int("SOURCE_MAX_RETRIES", 4)
SOURCE_BACKOFF_SECONDS = float(os.environ.get("SOURCE_BACKOFF_SECONDS", "0.5"))
SOURCE_PAGE_SIZE = env_int("SOURCE_PAGE_SIZE", 500)
# A running job renews its lease every JOB_HEARTBEAT_SECONDS; a task whose worker
# died ends "failed" (worker lost) once the lease ran out and the reaper ran
# (every WORKER_LOST_CHECK_SECONDS): within about lease + check seconds.
JOB_HEARTBEAT_SECONDS = float(os.environ.get("JOB_HEARTBEAT_SECONDS", "10"))
JOB_LEASE_SECONDS = float(os.environ.get("JOB_LEASE_SECONDS", "60"))
# A job whose database went away waits this long for it to come back to record why
# it stopped, rather than leave the reaper to call it "worker lost".
JOB_DATABASE_WAIT_SECONDS = float(os.environ.get("JOB_DATABASE_WAIT_SECONDS", "600"))
WORKER_LOST_CHECK_SECONDS = float(os.environ.get("WORKER_LOST_CHECK_SECONDS", "30"))
# Only the beat holding this Redis lock sends anything (operations/beat.py).
BEAT_LOCK_KEY = os.environ.get("BEAT_LOCK_KEY", "tasksite:beat")
BEAT_LOCK_TTL_SECONDS = float(os.environ.get("BEAT_LOCK_TTL_SECONDS", "30"))
# Celery (namespace CELERY_, read by tasksite/celery.py). The visibility timeout
# is read from three places (PITFALLS.md); all three sit well above the longest job.
CELERY_VISIBILITY_TIMEOUT = max(
    env_int("CELERY_VISIBILITY_TIMEOUT", JOB_MAX_SECONDS * 2), JOB_MAX_SECONDS + 60
)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_TASK_ACKS_LATE = True
# A worker that dies is answered by the job lease (operations/runner.py), not by
# requeueing: a job that kills its worker must not loop.
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Separate deployments (or parallel test runs) sharing one Redis use separate queues.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "celery")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SOFT_TIME_LIMIT = JOB_MAX_SECONDS
CELERY_TASK_TIME_LIMIT = JOB_MAX_SECONDS + 60
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "operations.beat:LockedScheduler"

# Email (tip statements): EMAIL_URL (smtp://user:pass@host:587/?tls=True, or
# submission://… for TLS on 587, smtps://… for TLS on connect) or Django's own
# EMAIL_* settings; without either, a file outbox under var/ a new user can open.
EMAIL_URL = os.environ.get("EMAIL_URL", "")
if EMAIL_URL:
    globals().update(dj_email_url.parse(EMAIL_URL))  # EMAIL_BACKEND, EMAIL_HOST, …
elif os.environ.get("EMAIL_HOST"):
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = os.environ["EMAIL_HOST"]
    EMAIL_PORT = env_int("EMAIL_PORT", 587)
    EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(VAR_DIR / "outbox")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Payroll <payroll@localhost>")
# Messages a second sent to the relay, and how a transient failure is retried.
EMAIL_RATE_PER_SECOND = float(os.environ.get("EMAIL_RATE_PER_SECOND", "5"))
EMAIL_MAX_RETRIES = env_int("EMAIL_MAX_RETRIES", 3)
EMAIL_BACKOFF_SECONDS = float(os.environ.get("EMAIL_BACKOFF_SECONDS", "1"))

# Alerts (docs/jobs.md, "Alerts"): who is told when a task ends failed or
# completed_with_errors. Routes per operation are edited in the admin (AlertRoute);
# ALERT_EMAILS and ALERT_WEBHOOK_URL are a default route for every operation.
ALERT_EMAILS = env_list("ALERT_EMAILS", [])
ALERT_WEBHOOK_URL = os.environ.get("ALERT_WEBHOOK_URL", "")
ALERT_FROM_EMAIL = os.environ.get("ALERT_FROM_EMAIL", "") or DEFAULT_FROM_EMAIL
# The service's public address, for the task page link in alerts (none when unset).
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "").rstrip("/")
# A scheduled run still "started" this long with no worker on it is alerted; the beat
# looks every ALERT_CHECK_SECONDS.
ALERT_NOT_STARTED_SECONDS = env_int("ALERT_NOT_STARTED_SECONDS", 600)
ALERT_CHECK_SECONDS = float(os.environ.get("ALERT_CHECK_SECONDS", "60"))
# Webhooks: per-request timeout. A delivery that failed transiently (connection
# errors, 429, 5xx) is retried by the alert task itself ALERT_MAX_RETRIES times,
# after ALERT_BACKOFF_SECONDS x 2^n (Retry-After honoured, at most
# ALERT_BACKOFF_MAX_SECONDS): the worker is free in between.
ALERT_TIMEOUT_SECONDS = float(os.environ.get("ALERT_TIMEOUT_SECONDS", "10"))
ALERT_MAX_RETRIES = env_int("ALERT_MAX_RETRIES", 8)
ALERT_BACKOFF_SECONDS = float(os.environ.get("ALERT_BACKOFF_SECONDS", "30"))

# Personal data: the operations whose tasks only holders of the reader role named
# here (an Entra ID app role; a Django group in local mode) and staff may see.
# "op=role,op=role" replaces the whole mapping.
PERSONAL_DATA_READER_ROLES = dict(
    item.split("=", 1)
    for item in env_list(
        "PERSONAL_DATA_READER_ROLES",
        [
            "transform_tips=TaskStatus.Tips.Read",
            "email_tips=TaskStatus.Tips.Read",
            "update_food_handler_pdfs=TaskStatus.FoodHandler.Read",
            "get_food_handler_links=TaskStatus.FoodHandler.Read",
        ],
    )
    if "=" in item
)

# Documents (food handler certificates and packets): Django's storage API, the
# file system under var/ by default. DOCUMENT_STORAGE_BACKEND and
# DOCUMENT_STORAGE_OPTIONS (JSON) select another, such as an S3-compatible store.
DOCUMENT_STORAGE_BACKEND = os.environ.get(
    "DOCUMENT_STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage"
)
DOCUMENT_STORAGE_OPTIONS = json.loads(os.environ.get("DOCUMENT_STORAGE_OPTIONS") or "null") or {
    "location": str(VAR_DIR / "documents")
}
# How long a signed document link (get_food_handler_links) stays valid.
DOCUMENT_LINK_SECONDS = env_int("DOCUMENT_LINK_SECONDS", 7 * 24 * 3600)

# Food handler certificates (update_food_handler_pdfs, docs/jobs.md). A certificate is a
# card or two: a file with more pages, or whose streams inflate past the bound (a scan at
# 300 dpi in colour is about 25 MB inflated), or that takes longer to check, is refused.
FOOD_HANDLER_PDF_MAX_PAGES = env_int("FOOD_HANDLER_PDF_MAX_PAGES", 20)
FOOD_HANDLER_PDF_MAX_INFLATED_BYTES = env_int("FOOD_HANDLER_PDF_MAX_INFLATED_BYTES", 50_000_000)
FOOD_HANDLER_PDF_CHECK_SECONDS = float(os.environ.get("FOOD_HANDLER_PDF_CHECK_SECONDS") or 10)
# Days the certificate of someone who left the roster, and a packet that is no longer
# current (a report, a replaced packet), are kept before they are deleted from storage.
FOOD_HANDLER_RETENTION_DAYS = env_int("FOOD_HANDLER_RETENTION_DAYS", 90)

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "America/New_York")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    "documents": {"BACKEND": DOCUMENT_STORAGE_BACKEND, "OPTIONS": DOCUMENT_STORAGE_OPTIONS},
}
WHITENOISE_USE_FINDERS = True

LOG_FORMAT = "json" if os.environ.get("LOG_FORMAT", "").strip().lower() == "json" else "plain"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "tasks.logging.RequestIDFilter"},
        # Tokens in URLs (?access_token=) and headers never reach a log line.
        "redact_tokens": {"()": "tasks.auth.redaction.RedactTokensFilter"},
        "answered_unavailable": {"()": "tasks.logging.AnsweredUnavailableFilter"},
    },
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        },
        # LOG_FORMAT=json: one JSON object a line, with request_id, task_id, operation.
        "json": {"()": "tasks.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id", "redact_tokens"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.server": {"level": "WARNING"},
        # A 503 is logged once, as a warning, by what answered it.
        "django.request": {"filters": ["answered_unavailable"]},
        "daphne": {"level": "WARNING"},
        # Its DEBUG lines print access tokens and authorization codes.
        "django_auth_adfs": {"level": "INFO"},
    },
}

# Watchdog (docs/jobs.md, "Alerts" and "Watchdog"). Alerts have a Celery queue of
# their own, so that none waits behind a job: a worker must consume it (deploy: a
# second worker with ``-Q alerts``). A worker started without ``-Q`` takes both.
ALERT_QUEUE = os.environ.get("ALERT_QUEUE", "alerts")
CELERY_TASK_QUEUES = {
    name: {"exchange": name, "routing_key": name}
    for name in dict.fromkeys([CELERY_TASK_DEFAULT_QUEUE, ALERT_QUEUE])
}
CELERY_TASK_ROUTES = {
    "operations.send_alerts": {"queue": ALERT_QUEUE},
    "operations.send_alert_summary": {"queue": ALERT_QUEUE},
    "operations.send_watchdog_alert": {"queue": ALERT_QUEUE},
    "operations.send_notifications": {"queue": ALERT_QUEUE},
}
ALERT_BACKOFF_MAX_SECONDS = float(os.environ.get("ALERT_BACKOFF_MAX_SECONDS", "3600"))
# The same operation failing with the same error (ids, numbers and dates folded) is
# alerted once per window; what was held back is told in one summary at its end.
ALERT_THROTTLE_SECONDS = env_int("ALERT_THROTTLE_SECONDS", 3600)
# Missed runs: a scheduled run that has not appeared SCHEDULE_GRACE_SECONDS after
# it was due is "late" (shown, alerted once). Each worker looks every
# WATCHDOG_CHECK_SECONDS, whether beat is alive or not; beat counts as not running
# when it has not ticked for BEAT_SILENT_SECONDS.
SCHEDULE_GRACE_SECONDS = env_int("SCHEDULE_GRACE_SECONDS", 600)
WATCHDOG_CHECK_SECONDS = float(os.environ.get("WATCHDOG_CHECK_SECONDS", "60"))
BEAT_SILENT_SECONDS = env_int("BEAT_SILENT_SECONDS", 120)
# Running long: an unfinished run older than RUNNING_LONG_FACTOR x its operation's
# p95 duration (of its last finished runs), and at least RUNNING_LONG_MIN_SECONDS.
RUNNING_LONG_FACTOR = float(os.environ.get("RUNNING_LONG_FACTOR", "3"))
RUNNING_LONG_MIN_SECONDS = env_int("RUNNING_LONG_MIN_SECONDS", 600)
# Retries of a run that failed for a passing reason (a source unreachable, the
# database lost): "operation=attempts:first wait in seconds", attempts in all
# (1: no retry). Off for email_tips (it sends mail) and the operations not named.
JOB_RETRY_POLICY = {
    operation: (int(attempts or 1), float(wait or 0))
    for operation, _, rule in (
        item.partition("=")
        for item in env_list(
            "JOB_RETRY_POLICY",
            ["daily_sales=3:300", "invoice_sync=3:300", "get_mpvs=3:300"],
        )
    )
    for attempts, _, wait in [rule.partition(":")]
}
