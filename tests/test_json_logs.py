"""LOG_FORMAT=json: one JSON object a line from the servers and the workers, ids included,
credentials redacted. Real processes, their real output."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tasks.auth.redaction import REDACTED, RedactTokensFilter
from tasks.logging import JsonFormatter, RequestIDFilter, request_id_var, task_id_var
from tests.support.servers import ROOT, free_port, service_env, wait_http

pytestmark = pytest.mark.django_db(transaction=True)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def get(url: str, token: str, request_id: str) -> int:
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def serve(command: list[str], log: Path, port: int) -> subprocess.Popen:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=service_env(LOG_FORMAT="json"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc


@pytest.mark.parametrize("server", ["daphne", "gunicorn"])
def test_a_server_logs_json_with_the_request_id_and_no_token(server, token, tmp_path):
    port = free_port()
    command = {
        "daphne": [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "tasksite.asgi:application",
        ],
        "gunicorn": [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "deploy/gunicorn.conf.py",
            "-w",
            "1",
            "-b",
            f"127.0.0.1:{port}",
            "tasksite.wsgi:application",
        ],
    }[server]
    log = tmp_path / f"{server}.log"
    proc = serve(command, log, port)
    rid = f"json-{uuid.uuid4().hex[:12]}"
    try:
        assert (
            get(f"http://127.0.0.1:{port}/task-status?access_token={token}&limit=1", token, rid)
            == 200
        )
        time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(15)
    text = log.read_text()
    assert token not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), text[:2000]
    access = [e for e in json_lines(text) if e.get("request_id") == rid]
    assert access and access[0]["logger"] == "tasks.access"
    assert f"access_token={REDACTED}" in access[0]["message"]
    assert {"time", "level", "logger", "message"} <= set(access[0])
    # Fields a log system filters on: the path without its query, numbers as numbers.
    line = access[0]
    assert (line["method"], line["path"], line["status"]) == ("GET", "/task-status", 200)
    assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0
    assert (line["user"], line["client"]) == ("reader", "127.0.0.1")


def test_a_worker_logs_json_lines_that_name_the_task_and_operation(tmp_path, settings):
    from operations import services
    from tests.support.celery_processes import celery_process, env_for, terminal

    queue = f"test-json-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    with celery_process(
        "worker", env_for(queue, LOG_FORMAT="json"), tmp_path, '"message": "'
    ) as worker:
        task_id = services.launch(
            "get_mpvs",
            {"business_date": "2025-06-10", "locations": ["L01"]},
            request_id="json-worker-1",
            user_label="test",
        )
        terminal(task_id)
        time.sleep(0.3)
    entries = json_lines(Path(worker.log_path).read_text())
    mine = [e for e in entries if e.get("task_id") == task_id]
    assert mine, entries[-5:]
    assert all(e["operation"] == "get_mpvs" and e["request_id"] == "json-worker-1" for e in mine)
    assert any("started on" in e["message"] for e in mine)


def test_a_traceback_is_one_json_value_and_redacted():
    secret = "tsk_" + "A" * 40
    try:
        raise RuntimeError(f"token {secret} refused")
    except RuntimeError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "boom %s", (secret,), sys.exc_info()
        )
    request_token, task_token = request_id_var.set("r-1"), task_id_var.set("t-1")
    try:
        RequestIDFilter().filter(record)
    finally:
        request_id_var.reset(request_token)
        task_id_var.reset(task_token)
    RedactTokensFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "\n" not in line and secret not in line
    entry = json.loads(line)
    assert entry["request_id"] == "r-1" and entry["task_id"] == "t-1"
    assert "operation" not in entry  # no job: the key is left out rather than "-"
    assert "RuntimeError" in entry["exc_info"]


def _access_record(caplog, client, path: str, **headers: str) -> logging.LogRecord:
    with caplog.at_level(logging.INFO, logger="tasks.access"):
        client.get(path, **headers)
    (record,) = [r for r in caplog.records if r.name == "tasks.access"]
    RequestIDFilter().filter(record)
    RedactTokensFilter().filter(record)
    return record


@pytest.mark.django_db
def test_an_anonymous_access_line_behind_the_proxy_names_the_forwarded_client(caplog, client):
    record = _access_record(
        caplog, client, "/healthz?x=1", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7"
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["path"] == "/healthz" and entry["status"] == 200
    assert entry["user"] is None and entry["client"] == "203.0.113.7"
    # Plain text stays one readable line, the query included.
    plain = logging.Formatter("%(levelname)s %(name)s [%(request_id)s] %(message)s")
    assert re.fullmatch(
        r"INFO tasks\.access \[[0-9a-f-]{36}\] GET /healthz\?x=1 200 [0-9.]+ms",
        plain.format(record),
    )


@pytest.mark.django_db
def test_a_peer_that_is_not_the_proxy_is_logged_as_itself(caplog, client):
    record = _access_record(
        caplog, client, "/healthz", REMOTE_ADDR="198.51.100.2", HTTP_X_FORWARDED_FOR="10.9.9.9"
    )
    assert record.client == "198.51.100.2"


@pytest.mark.django_db
def test_a_document_link_in_the_path_field_is_redacted(caplog, client):
    link = "/documents/eyJuIjoiZm9vZC1oYW5kbGVy:1tQk2x:abcDEF123_-xyz"
    entry = json.loads(JsonFormatter().format(_access_record(caplog, client, link)))
    assert entry["path"] == f"/documents/{REDACTED}"
    assert "abcDEF123" not in json.dumps(entry)
