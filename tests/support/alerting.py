"""Alerts as the tests see them: a real HTTP webhook receiver on loopback, the alert
messages waiting on a queue, and the environment of a worker that alerts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from django.conf import settings as django_settings

from tests.support.celery_processes import env_for

BASE = "https://tasks.example.com"
SECRET_PATH = "/hooks/T000/B000/secret-token"


class Receiver:
    """Records every POST; answers from ``script`` ([(status, headers)]) then 200."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict[str, str]]] = []
        self.delay = 0.0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SECRET_PATH}"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests]


@contextmanager
def http_receiver(port: int = 0) -> Iterator[Receiver]:
    receiver = Receiver(port)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.lock:
                receiver.requests.append(
                    {
                        "path": self.path,
                        "body": body,
                        "content_type": self.headers.get("Content-Type"),
                    }
                )
                status, headers = receiver.script.pop(0) if receiver.script else (200, {})
            if receiver.delay:
                time.sleep(receiver.delay)
            answer = b"ok"
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def queued(queue: str, task: str = "operations.send_alerts") -> list[dict[str, Any]]:
    """The headers of the ``task`` messages waiting on ``queue``."""
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    found = []
    for raw in client.lrange(queue, 0, -1):
        headers = json.loads(raw)["headers"]
        if headers["task"] == task:
            found.append(headers)
    return found


def queued_alerts(queue: str) -> list[str]:
    """The task ids of the ``operations.send_alerts`` messages waiting on the alert queue
    of the test whose job queue is ``queue``; none ever waits on the job queue."""
    assert queued(queue) == [], "alerts never wait behind jobs"
    return [headers["argsrepr"] for headers in queued(f"{queue}-alerts")]


def alert_env(queue: str, smtp: Any, hook: Receiver, **extra: str) -> dict[str, str]:
    return env_for(
        queue,
        EMAIL_HOST=smtp.host,
        EMAIL_PORT=str(smtp.port),
        EMAIL_USE_TLS="0",
        EMAIL_HOST_USER="",
        EMAIL_HOST_PASSWORD="",
        EMAIL_URL="",
        ALERT_EMAILS="ops@example.com",
        ALERT_WEBHOOK_URL=hook.url,
        PUBLIC_BASE_URL=BASE,
        **extra,
    )
