"""Prometheus metrics: their definitions, ``/metrics``, the HTTP middleware, the exporters.

Every process counts for itself and is scraped on its own, on loopback (README,
"Metrics"); nginx never proxies ``/metrics``:

- gunicorn: prometheus_client's multiprocess mode. ``deploy/gunicorn.conf.py`` gives
  its workers one fresh ``PROMETHEUS_MULTIPROC_DIR``; each writes its counts there,
  and whichever worker answers ``/metrics`` sums them all.
- daphne: the process's own registry, on that process's own ``/metrics``.
- a Celery worker (``WORKER_METRICS_PORT``): multiprocess mode too, so that the
  prefork children that run the jobs write what the worker's main process serves
  (``worker_metrics``); counts survive a child's replacement.
- beat (``BEAT_METRICS_PORT``): its own registry.

``/metrics`` answers only with ``METRICS_TOKEN`` set and ``Authorization: Bearer
<METRICS_TOKEN>``: 404 otherwise (a wrong token: 401), on every process alike.

The metrics are defined on first use, not at import. prometheus_client chooses
where values live (memory, or the files of multiprocess mode) when it is first
imported, and a Celery worker can make that choice only once its command runs,
after the project's modules (this one included) are imported.

The hub is the hot path (docs/performance.md): it counts once per round
(``inc(n)``), never per client per frame, and a consumer's deliver path makes no
metric call. Updates a slow client's backlog conflates are counted in a plain int
(``tasks.live.delivery.client_conflated``), read at scrape time.

This module imports nothing of the project, so that everything may count here;
the ``/metrics`` view of gunicorn and daphne is ``tasks.views.metrics_view``.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings

from .hybrid import HybridMiddleware

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# updated_at in the payload has whole seconds: a lag reads 0 to 1 s high.
_LAG_BUCKETS = (1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_ROUND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)

# Label values clients choose are folded into a few, so no client can grow the series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 4001, 4013, 4401, 4403, 4503}
)


class _Metrics:
    """Every metric of the project (names ``tasksite_*``), made once per process."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        # -- HTTP (gunicorn, and daphne's HTTP) --
        self.HTTP_REQUESTS = Counter(
            "tasksite_http_requests_total",
            "HTTP requests answered, by URL pattern name (route), method and status.",
            ["route", "method", "status"],
        )
        self.HTTP_DURATION = Histogram(
            "tasksite_http_request_duration_seconds",
            "Time to answer an HTTP request in the application, by URL pattern name.",
            ["route"],
            buckets=_HTTP_BUCKETS,
        )
        # -- WebSocket connections (daphne) --
        self.WS_OPEN = Gauge(
            "tasksite_websocket_connections",
            "WebSocket connections open now.",
            multiprocess_mode="livesum",
        )
        self.WS_OPENED = Counter(
            "tasksite_websocket_connections_opened_total", "WebSocket connections accepted."
        )
        self.WS_CLOSED = Counter(
            "tasksite_websocket_connections_closed_total",
            "WebSocket connections ended, by close code ('none': no close frame).",
            ["code"],
        )
        self.WS_SLOW_CLOSED = Counter(
            "tasksite_websocket_slow_clients_closed_total",
            "Clients closed with 4013 for reading too slowly, by reason.",
            ["reason"],
        )
        self.WS_DROPPED = Counter(
            "tasksite_websocket_updates_dropped_total",
            "Updates in the backlog of a client closed with 4013, never sent to it.",
        )
        # -- the hub (daphne) --
        self.HUB_ROUNDS = Counter(
            "tasksite_hub_rounds_total", "Fan-out rounds that routed at least one update."
        )
        self.HUB_ROUTED = Counter(
            "tasksite_hub_updates_routed_total",
            "Updates fanned out to this process's clients (after conflation).",
        )
        self.HUB_FRAMES = Counter(
            "tasksite_hub_frames_delivered_total",
            "Update frames handed to clients (one per client per routed update).",
        )
        self.HUB_CONFLATED = Counter(
            "tasksite_hub_updates_conflated_total",
            "Progress updates the hub replaced by a newer one before the fan-out.",
        )
        self.HUB_DROPPED = Counter(
            "tasksite_hub_updates_dropped_total",
            "Updates the hub did not route: 'stale' (not newer than one routed), 'malformed'.",
            ["reason"],
        )
        self.HUB_LAG = Histogram(
            "tasksite_hub_round_lag_seconds",
            "Age of a round's oldest update when it was fanned out, from the task's "
            "updated_at (whole seconds: reads 0 to 1 s high).",
            buckets=_LAG_BUCKETS,
        )
        self.HUB_ROUND_SECONDS = Histogram(
            "tasksite_hub_round_duration_seconds",
            "Time one fan-out round took.",
            buckets=_ROUND_BUCKETS,
        )
        self.HUB_RECONNECTS = Counter(
            "tasksite_hub_subscription_reconnects_total",
            "Times the Redis subscription was restored after it dropped.",
        )
        self.HUB_SUBSCRIPTION_LOST = Counter(
            "tasksite_hub_subscription_failures_total",
            "Failed or dropped Redis subscription attempts.",
        )
        # -- the tracker (any process that reports) --
        self.TRACKER_WRITES = Counter(
            "tasksite_tracker_writes_total",
            "Task status writes: 'create', 'update' (one compare-and-swap), 'locked' "
            "(made again under a row lock).",
            ["kind"],
        )
        self.TRACKER_PUBLISHES = Counter(
            "tasksite_tracker_publishes_total", "Changes published to the updates channel."
        )
        self.TRACKER_PUBLISH_FAILURES = Counter(
            "tasksite_tracker_publish_failures_total",
            "Changes whose publish failed (logged; catch-up repairs the gap).",
        )
        # -- jobs (Celery workers) --
        self.JOBS_STARTED = Counter(
            "tasksite_jobs_started_total", "Jobs a worker began to run.", ["operation"]
        )
        self.JOBS_FINISHED = Counter(
            "tasksite_jobs_finished_total",
            "Jobs ended, by operation and outcome (the task's final status, or "
            "cancelled, missing, skipped, ended elsewhere, database lost).",
            ["operation", "status"],
        )
        self.JOB_DURATION = Histogram(
            "tasksite_job_duration_seconds",
            "Run time of a job.",
            ["operation"],
            buckets=_JOB_BUCKETS,
        )
        self.JOBS_WORKER_LOST = Counter(
            "tasksite_jobs_worker_lost_total",
            "Jobs ended 'worker lost', found by the reaper or by a redelivery.",
            ["operation", "found_by"],
        )
        self.JOBS_CANCELLED = Counter(
            "tasksite_jobs_cancelled_total",
            "Cancel requests, by operation and whether a worker had the job yet.",
            ["operation", "state"],
        )
        self.TASKS_PURGED = Counter(
            "tasksite_tasks_purged_total", "Expired tasks deleted by the purge."
        )
        self.TASKS_STALE_FAILED = Counter(
            "tasksite_tasks_stale_failed_total",
            "Tasks ended failed because their reporter went silent.",
        )
        # -- beat --
        self.BEAT_LOCK_HELD = Gauge(
            "tasksite_beat_lock_held",
            "1 while this beat holds the lock and sends, else 0.",
            multiprocess_mode="livemax",
        )
        self.BEAT_SENT = Counter(
            "tasksite_beat_entries_sent_total", "Schedule entries this beat sent.", ["entry"]
        )
        # -- alerts and the watchdog (operations/alerts.py, operations/watchdog.py) --
        self.ALERTS = Counter(
            "tasksite_alerts",
            "Alert deliveries per target: 'sent', 'failed' (an attempt that did not "
            "deliver, transient or refused), 'suppressed' (held back by the throttle).",
            ["outcome"],
        )
        self.BEAT_LAST_TICK = Gauge(
            "tasksite_beat_last_tick_timestamp_seconds",
            "When the beat holding the lock last ticked, Unix seconds (beat itself, and "
            "each worker's watchdog from Redis).",
            multiprocess_mode="max",
        )
        self.OPERATION_LAST_STARTED = Gauge(
            "tasksite_operation_last_started_timestamp_seconds",
            "When the latest run of a scheduled operation launched by the schedule was "
            "created, Unix seconds (the watchdog, in each worker).",
            ["operation"],
            multiprocess_mode="max",
        )
        self.OPERATION_LAST_DUE = Gauge(
            "tasksite_operation_last_due_timestamp_seconds",
            "When the schedule's latest run of an operation was due, Unix seconds.",
            ["operation"],
            multiprocess_mode="max",
        )
        self.OPERATION_NEXT_DUE = Gauge(
            "tasksite_operation_next_due_timestamp_seconds",
            "When the schedule's next run of an operation is due, Unix seconds.",
            ["operation"],
            multiprocess_mode="max",
        )
        # -- the queues and the build (README, "Metrics") --
        self.QUEUE_DEPTH = Gauge(
            "tasksite_queue_depth",
            "Messages waiting on a Celery queue (the jobs' and the alerts'), as each "
            "worker's watchdog last read it.",
            ["queue"],
            multiprocess_mode="livemax",
        )
        self.BUILD_INFO = Gauge(
            "tasksite_build_info",
            "1, labelled with the service's version (TASKSITE_VERSION) and Python's.",
            ["version", "python"],
            multiprocess_mode="max",
        )
        self.BUILD_INFO.labels(settings.TASKSITE_VERSION, platform.python_version()).set(1)
        if os.environ.get(MULTIPROC_ENV):
            # Summed across gunicorn's workers, the registry has no process_* of its own:
            # each worker reports its memory and CPU, one series a pid, while it lives.
            self.PROCESS_MEMORY = Gauge(
                "tasksite_process_resident_memory_bytes",
                "Resident memory of each web worker process (multiprocess mode).",
                multiprocess_mode="liveall",
            )
            self.PROCESS_CPU = Gauge(
                "tasksite_process_cpu_seconds",
                "User and system CPU time of each web worker process (multiprocess mode).",
                multiprocess_mode="liveall",
            )
            _ProcessSampler(self.PROCESS_MEMORY, self.PROCESS_CPU).start()
        self.OPERATION_LATE = Gauge(
            "tasksite_operation_late",
            "1 while the latest scheduled run of an operation has not appeared within "
            "SCHEDULE_GRACE_SECONDS of its due time, else 0.",
            ["operation"],
            multiprocess_mode="livemax",
        )
        from prometheus_client import REGISTRY

        REGISTRY.register(_ClientConflation())


class _ClientConflation:
    """Read at scrape time: updates a slow client's backlog replaced by newer ones."""

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        delivery = sys.modules.get("tasks.live.delivery")
        family = CounterMetricFamily(
            "tasksite_websocket_updates_conflated",
            "Progress updates a slow client's backlog replaced by a newer one.",
        )
        family.add_metric([], float(getattr(delivery, "client_conflated", 0)))
        yield family


_instance: _Metrics | None = None
_define_lock = threading.Lock()


class _ProcessSampler(threading.Thread):
    """Samples this process's resident memory and CPU time every PROCESS_SAMPLE_SECONDS."""

    def __init__(self, memory: Any, cpu: Any) -> None:
        super().__init__(name="process-metrics", daemon=True)
        self.memory, self.cpu = memory, cpu

    def run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            try:
                with open("/proc/self/statm") as statm:
                    self.memory.set(int(statm.read().split()[1]) * page)
            except (OSError, ValueError, IndexError):
                pass  # not Linux: memory is not reported
            times = os.times()
            self.cpu.set(times.user + times.system)
            time.sleep(PROCESS_SAMPLE_SECONDS)


PROCESS_SAMPLE_SECONDS = 10.0


def defined() -> bool:
    return _instance is not None


def get() -> _Metrics:
    global _instance
    if _instance is None:
        with _define_lock:
            if _instance is None:
                _instance = _Metrics()
    return _instance


def __getattr__(name: str) -> Any:
    """``metrics.JOBS_STARTED`` and the like: defined on first use, then a plain global."""
    if name.isupper():
        value = getattr(get(), name, None)
        if value is not None:
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def close_code_label(code: Any) -> str:
    if code is None:
        return "none"
    return str(code) if code in _CLOSE_CODES else "other"


# -- the HTTP middleware --------------------------------------------------------------


def _route(request: Any) -> str:
    match = getattr(request, "resolver_match", None)
    if match is not None:
        return match.view_name or "unnamed"
    if request.path.startswith("/" + settings.STATIC_URL.lstrip("/")):
        return "static"
    return "unmatched"


class MetricsMiddleware(HybridMiddleware):
    """Counts every answered request by route name and status, and times it."""

    def handle(self, request: Any) -> Any:
        began = time.perf_counter()
        response = self.get_response(request)
        self._count(request, response, began)
        return response

    async def __acall__(self, request: Any) -> Any:
        began = time.perf_counter()
        response = await self.get_response(request)
        self._count(request, response, began)
        return response

    @staticmethod
    def _count(request: Any, response: Any, began: float) -> None:
        elapsed = time.perf_counter() - began
        m = get()
        route = _route(request)
        method = request.method if request.method in _METHODS else "other"
        m.HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
        m.HTTP_DURATION.labels(route).observe(elapsed)


# -- /metrics -------------------------------------------------------------------------


def check_token(authorization: str | None) -> int:
    """200 for the right bearer token; 404 without METRICS_TOKEN or a token; 401 wrong."""
    token = settings.METRICS_TOKEN
    if not token or not authorization:
        return 404
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return 401
    if hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode("utf-8")):
        return 200
    return 401


def render(accept: str | None) -> tuple[bytes, str]:
    """This process's metrics (all gunicorn workers' in multiprocess mode), as asked."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    get()  # every metric defined, so each shows from the first scrape
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
    else:
        registry = REGISTRY
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


# What a refused scrape is told (``tasks.views.metrics_view`` and the exporters alike).
REFUSAL_DETAILS = {404: "not found", 401: "invalid metrics token", 405: "method not allowed"}


# -- the exporters of worker and beat -----------------------------------------------


def _wsgi_app(environ: dict, start_response: Callable) -> list[bytes]:
    status = 404
    if environ.get("PATH_INFO") == "/metrics":
        status = check_token(environ.get("HTTP_AUTHORIZATION"))
        if status == 200 and environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            status = 405
    if status == 200:
        body, content_type = render(environ.get("HTTP_ACCEPT"))
        headers = [("Content-Type", content_type), ("Cache-Control", "no-store")]
        start_response("200 OK", headers + [("Content-Length", str(len(body)))])
        return [body]
    request_id = uuid.uuid4().hex
    detail = REFUSAL_DETAILS[status]
    body = (json.dumps({"detail": detail, "request_id": request_id}) + "\n").encode()
    headers = [
        ("Content-Type", "application/json"),
        ("X-Request-ID", request_id),
        ("Content-Length", str(len(body))),
    ]
    if status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
    reason = {404: "Not Found", 401: "Unauthorized", 405: "Method Not Allowed"}[status]
    start_response(f"{status} {reason}", headers)
    return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def start_exporter(port: int, what: str) -> WSGIServer | None:
    """Serve ``/metrics`` on ``METRICS_ADDR:port`` from a thread; None when off or busy."""
    if not port:
        return None
    if not settings.METRICS_TOKEN:
        logger.warning(
            "%s metrics: METRICS_TOKEN is not set; not serving /metrics on port %s", what, port
        )
        return None
    addr = settings.METRICS_ADDR
    server_class = _Server6 if ":" in addr else _Server
    try:
        server = make_server(
            addr, port, _wsgi_app, server_class=server_class, handler_class=_QuietHandler
        )
    except OSError as exc:  # a busy port must not stop the jobs
        logger.error("%s metrics: cannot listen on %s:%s (%s)", what, addr, port, exc)
        return None
    threading.Thread(target=server.serve_forever, name=f"metrics-{what}", daemon=True).start()
    logger.info("%s metrics on http://%s:%s/metrics", what, addr, port)
    return server


def use_multiprocess_dir() -> None:
    """Multiprocess mode for this process and the children it forks from now on.

    A directory given in ``PROMETHEUS_MULTIPROC_DIR`` is emptied (it must belong to
    this process alone); without one, a fresh one is made and removed at exit.
    """
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.remove(os.path.join(path, name))
    else:
        path = tempfile.mkdtemp(prefix="tasksite-metrics-")
        os.environ[MULTIPROC_ENV] = path
        import atexit

        atexit.register(shutil.rmtree, path, True)
    if defined():
        logger.warning(
            "metrics were made before multiprocess mode was chosen; "
            "children's counts may be missing"
        )
    if "prometheus_client.values" in sys.modules:  # imported: choose file-backed values now
        from prometheus_client import values

        values.ValueClass = values.get_value_class()


def worker_metrics(**_: Any) -> None:
    """``celeryd_init``: a worker's exporter, summing its pool children (multiprocess)."""
    port = settings.WORKER_METRICS_PORT
    if not port or not settings.METRICS_TOKEN:
        if port:
            start_exporter(port, "worker")  # logs why it is off
        return
    use_multiprocess_dir()
    start_exporter(port, "worker")


def beat_metrics(**_: Any) -> None:
    """``beat_init``: the beat's exporter (not the embedded beat of ``make run``)."""
    if settings.REDIS_URL:
        start_exporter(settings.BEAT_METRICS_PORT, "beat")
