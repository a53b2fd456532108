"""gunicorn's settings behind the shipped nginx (deploy/nginx/tasksite.conf).

Read by deploy/systemd/tasksite-web.service and by ``make stack``: ``gunicorn -c
deploy/gunicorn.conf.py --bind 127.0.0.1:8000 tasksite.wsgi:application``. The
number of workers comes from the environment (``WEB_WORKERS``).
"""

import json
import logging
import os
import shutil
import tempfile
import uuid

from gunicorn import util

workers = int(os.environ.get("WEB_WORKERS", "4"))
# Sync workers with persistent database connections (README, "Running in production").
worker_class = "sync"
# A worker stuck this long is restarted; nginx waits longer (proxy_read_timeout 60s),
# so the client gets the app's answer or a 502, never a hung connection.
timeout = 30
graceful_timeout = 20

# Limits at or above nginx's (large_client_header_buffers 4 8k): nginx answers
# every request over them first, in JSON, and gunicorn's plain-text 400/414/431
# never reach a client. The request line: nginx allows 8190 bytes plus CRLF,
# gunicorn's maximum. A header line: nginx allows 8190 bytes; nginx rewrites a few
# headers, so gunicorn's room is twice that. The number of fields: nginx has no
# such limit, its 32k of headers hold fewer fields than gunicorn's maximum.
limit_request_line = 8190
limit_request_field_size = 16384
limit_request_fields = 32768

# X-Forwarded-Proto is believed only from the proxy (nginx on this host sets it
# and clears the other scheme headers gunicorn knows). FORWARDED_ALLOW_IPS names
# the proxy when it runs elsewhere.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# The app logs one access line per request with its request id (tasks/middleware.py);
# gunicorn's own errors go to stderr, which systemd's journal keeps.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# LOG_FORMAT=json: gunicorn's own lines are JSON objects too, as the app's are
# (tasks/logging.py), with tokens redacted like everywhere else.
if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "tasks.logging.JsonFormatter"}},
        "filters": {
            "context": {"()": "tasks.logging.RequestIDFilter"},
            "redact": {"()": "tasks.auth.redaction.RedactTokensFilter"},
        },
        "handlers": {
            name: {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["context", "redact"],
                "stream": "ext://sys.stderr",
            }
            for name in ("console", "error_console")  # gunicorn's defaults name both
        },
        "loggers": {
            "gunicorn.error": {
                "handlers": ["error_console"],
                "level": loglevel.upper(),
                "propagate": False,
            },
        },
    }


# Metrics (tasks/metrics.py; README, "Metrics"): prometheus_client's multiprocess
# mode. Each worker writes its counts to files in one directory and any worker's
# /metrics sums them all. The directory is chosen here, in the master, before any
# worker imports prometheus_client: PROMETHEUS_MULTIPROC_DIR when given (emptied;
# one per gunicorn), else a fresh one removed when gunicorn exits. Never set it in
# the shared environment file: daphne, workers and beat keep their own counts.
_metrics_dirs = []


def on_starting(server):
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.remove(os.path.join(path, name))
    else:
        path = tempfile.mkdtemp(prefix="tasksite-web-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        _metrics_dirs.append(path)


def child_exit(server, worker):
    # A dead worker's counters stay in the sum; its live gauges go.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    for path in _metrics_dirs:
        shutil.rmtree(path, ignore_errors=True)


# A request gunicorn refuses itself (one nginx passed on but gunicorn's stricter
# parser rejects: a control character in a header value, a repeated
# Content-Type, ...) is answered as the app and nginx answer errors, in JSON with
# a request id, never gunicorn's HTML. Its warning line names the fault.
_DETAILS = {
    400: "bad request",
    403: "forbidden",
    414: "request line too long",
    417: "expectation failed",
    431: "request headers too large",
    500: "internal error",
    501: "not implemented",
}


def _write_json_error(sock, status_int, reason, mesg):
    request_id = uuid.uuid4().hex
    detail = _DETAILS.get(status_int, "error")
    body = (
        json.dumps({"detail": f"{detail}: {mesg}" if mesg else detail, "request_id": request_id})
        + "\n"
    )
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nCache-Control: no-store\r\n"
        f"X-Request-ID: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    logging.getLogger("gunicorn.error").warning("answered %s [%s]", status_int, request_id)
    util.write_nonblock(sock, (head + body).encode("latin-1", "replace"))


util.write_error = _write_json_error
