"""HTTP load for the REST benchmark: ``wrk`` when installed, else Python processes.

Either way: C connections for a bounded time against loopback, requests a
second and p50/p99 latency, and every non-2xx answer or socket error counted
(a run with errors is reported as such, never as a figure). The Python
generator is a fallback (``apt-get install -y wrk`` for the real one): its
clients compete with the server for the same two cores, so its figures are a
lower bound.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def generator() -> str:
    """``wrk`` if installed (``BENCH_LOAD=python`` forces the fallback)."""
    if os.environ.get("BENCH_LOAD") == "python" or not shutil.which("wrk"):
        return "python"
    return "wrk"


def measure(
    host: str,
    port: int,
    paths: list[str],
    headers: dict[str, str],
    *,
    connections: int,
    seconds: float,
) -> dict[str, Any]:
    """Load ``paths`` (chosen at random per request) and return rps, p50, p99, errors."""
    if generator() == "wrk":
        return _wrk(host, port, paths, headers, connections, seconds)
    return _python(host, port, paths, headers, connections, seconds)


def _wrk(
    host: str,
    port: int,
    paths: list[str],
    headers: dict[str, str],
    connections: int,
    seconds: float,
) -> dict[str, Any]:
    script = "local paths = " + json.dumps(paths).replace("[", "{").replace("]", "}") + "\n"
    script += "".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items()
    )
    script += "request = function() return wrk.format('GET', paths[math.random(#paths)]) end\n"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t",
                str(min(2, connections)),
                "-c",
                str(connections),
                "-d",
                f"{max(1, round(seconds))}s",
                "--latency",
                "-s",
                lua.name,
                f"http://{host}:{port}{paths[0]}",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        ).stdout
    finally:
        Path(lua.name).unlink()
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(found.group(1)) if found else 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(value) for value in socket_errors.groups())
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _latency(out, "50%"),
        "p99_ms": _latency(out, "99%"),
        "requests": requests,
        "errors": errors,
    }


def _latency(out: str, label: str) -> float:
    value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M).groups()
    return round(float(value) * _UNITS[unit] * 1000, 2)


def _python(
    host: str,
    port: int,
    paths: list[str],
    headers: dict[str, str],
    connections: int,
    seconds: float,
) -> dict[str, Any]:
    processes = min(2, connections)
    share = [connections // processes + (i < connections % processes) for i in range(processes)]
    deadline = time.time() + 0.5 + seconds
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.starmap(
            _client_process,
            [(host, port, paths, headers, n, deadline - seconds, deadline) for n in share],
        )
    latencies = sorted(lat for part in parts for lat in part["latencies"])
    errors = sum(part["errors"] for part in parts)

    def pick(q: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2)

    return {
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "requests": len(latencies),
        "errors": errors,
    }


def _client_process(
    host: str,
    port: int,
    paths: list[str],
    headers: dict[str, str],
    threads: int,
    start: float,
    deadline: float,
) -> dict[str, Any]:
    results: list[dict[str, Any]] = []

    def client() -> None:
        latencies: list[float] = []
        errors = 0
        conn = http.client.HTTPConnection(host, port, timeout=10)
        time.sleep(max(0.0, start - time.time()))
        while time.time() < deadline:
            began = time.perf_counter()
            try:
                conn.request("GET", random.choice(paths), headers=headers)
                response = conn.getresponse()
                response.read()
                if response.will_close:
                    conn.close()
                ok = 200 <= response.status < 400
            except (OSError, http.client.HTTPException):
                conn.close()
                ok = False
            if ok:
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1
        conn.close()
        results.append({"latencies": latencies, "errors": errors})

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {
        "latencies": [lat for r in results for lat in r["latencies"]],
        "errors": sum(r["errors"] for r in results),
    }
