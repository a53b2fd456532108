"""What the production proxy costs: the same servers measured directly and through nginx.

The shipped nginx site (deploy/nginx/tasksite.conf, rendered by deploy/stack.py's
line tags as ``make stack`` renders it) is put in front of

- **REST**: one gunicorn as production runs it (``-c deploy/gunicorn.conf.py``,
  ``WEB_WORKERS`` sync workers) on PostgreSQL with 100,000 tasks. GET by id is
  loaded by ``bench/_load.py`` (wrk when installed) on gunicorn's own port and on
  nginx's, with the same paths, token, connections and duration;
- **fan-out**: 1,000 WebSocket clients at 20 changes a second (``bench/fanout.py``'s
  producer, clients and checks), connected straight to one daphne, then through
  nginx to a fresh daphne started the same way.

Layouts alternate (direct, nginx, nginx, direct with ``--rounds 2``) so that a
drift of the shared machine's load weighs on both alike; each layout's figure
is the mean of its rounds. Targets: the proxy costs under 20% of throughput
(REST requests a second; fan-out delivered messages a second) and under 2x the
p99 (REST latency; fan-out freshness lag).

nginx's main configuration is the stack's (deploy/stack.py ``render_main``) with
the ``worker_processes 1`` (``--nginx-workers``), ``worker_connections 4096`` and
``worker_rlimit_nofile 8192`` the site's header asks for on a host whose cores
nginx shares with the app (each WebSocket client holds two connections in nginx).

``python -m bench proxy`` (full size, about 5 minutes) or ``--smoke``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import _load, _stack, fanout
from bench.common import (
    ROOT,
    busy,
    finish,
    free_port,
    header,
    ratio,
    table,
)
from bench.fanout_client import raise_open_files
from deploy.stack import GUNICORN_CONF, NGINX_SITE, find_nginx, render_main, render_site

HOST = "127.0.0.1"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"  # db 7: fanout, db 8: rest/ingest/purge
MAX_THROUGHPUT_COST = 0.20  # through nginx >= 80% of direct
MAX_P99_FACTOR = 2.0
LAYOUTS = ("direct", "nginx")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", _stack.DEFAULT_DATABASE_URL)
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_PROXY_REDIS_URL", DEFAULT_REDIS_URL)
    )
    parser.add_argument(
        "--no-record",
        action="store_true",
        help="print only, write no results file (the smoke test)",
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=32, help="REST load connections")
    parser.add_argument("--seconds", type=float, default=6.0, help="per REST measurement")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn's WEB_WORKERS")
    parser.add_argument("--ws-clients", type=int, default=1000, help="WebSocket clients")
    parser.add_argument("--ws-rate", type=float, default=20.0, help="changes a second")
    parser.add_argument("--ws-seconds", type=float, default=10.0, help="per fan-out phase")
    parser.add_argument("--slots", type=int, default=10, help="tasks live at once")
    parser.add_argument("--steps", type=int, default=25, help="changes in one task's life")
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="measurements per layout, alternating direct/nginx (ABBA, repeated)",
    )
    parser.add_argument(
        "--nginx-workers",
        default="1",
        help="nginx's worker_processes (1, as the site's header advises on a host whose "
        "cores the app shares; auto: Debian's default, one per core)",
    )
    parser.add_argument(
        "--only", choices=("rest", "fanout"), default=None, help="measure one of the two halves"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        args.rows, args.connections, args.seconds, args.web_workers = 2000, 4, 1.0, 2
        args.ws_clients, args.ws_seconds, args.rounds = 10, 1.0, 1
    header("proxy")
    load_before = busy()
    print(f"before: {load_before}")
    nginx = find_nginx()
    if nginx is None:
        raise RuntimeError("nginx is not installed: apt-get install -y nginx-light")
    print(
        f"nginx: {_nginx_version(nginx)}, the shipped site ({NGINX_SITE.relative_to(ROOT)}), "
        f"worker_processes {args.nginx_workers} ({os.cpu_count()} cores), "
        "worker_connections 4096"
    )
    raise_open_files()  # nginx and the clients inherit it
    started = time.monotonic()
    order = _order(args.rounds)
    figures: dict[str, Any] = {
        "load_before": load_before,
        "nginx": _nginx_version(nginx),
        "nginx_workers": args.nginx_workers,
        "order": order,
    }
    _stack.prepare_database(args.database_url, args.redis_url)
    if args.only in (None, "rest"):
        figures.update(_rest(args, nginx, order))
    if args.only in (None, "fanout"):
        figures.update(_fanout(args, nginx, order))
    verdicts = _targets(figures)
    figures["targets"] = verdicts
    print("\nTargets (nginx against direct, same servers, same run)")
    print(table(verdicts, ["target", "direct", "nginx", "measured", "goal", "met"]))
    for line in _verdict_lines(verdicts):
        print(line)
    figures["load_after"] = busy()
    figures["seconds"] = round(time.monotonic() - started)
    print(f"after: {figures['load_after']}; proxy bench took {figures['seconds']}s")
    finish("proxy", figures, args)
    return figures


def _order(rounds: int) -> list[str]:
    """direct, nginx, nginx, direct, direct, nginx, ...: each layout first as often."""
    out: list[str] = []
    for index in range(rounds):
        out += list(LAYOUTS if index % 2 == 0 else reversed(LAYOUTS))
    return out


# -- nginx in front ------------------------------------------------------------------


class Front:
    """A running nginx with the shipped site on ``port``."""

    def __init__(self, proc: subprocess.Popen, port: int, workdir: Path) -> None:
        self.proc, self.port, self.workdir = proc, port, workdir

    def workers(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            return [int(pid) for pid in path.read_text().split()]
        return []

    def cpu_seconds(self) -> float:
        """Master and workers, utime + stime."""
        total = 0.0
        for pid in [self.proc.pid, *self.workers()]:
            with contextlib.suppress(OSError):
                total += fanout.cpu_seconds(pid)
        return total


def _main_conf(workdir: Path, site: Path, log_dir: Path, workers: str) -> str:
    """The stack's main configuration, sized as the site's header asks for production."""
    text = render_main(workdir, site, log_dir)
    for old, new in (
        ("worker_processes 1;\n", f"worker_processes {workers};\nworker_rlimit_nofile 8192;\n"),
        ("events { worker_connections 1024; }", "events { worker_connections 4096; }"),
    ):
        if old not in text:
            raise RuntimeError(f"deploy/stack.py render_main no longer writes {old.strip()!r}")
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def nginx_front(nginx: str, *, web: int, ws: int, workers: str) -> Iterator[Front]:
    """nginx with the shipped site in front of gunicorn on ``web`` and daphne on ``ws``."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-proxy-nginx-"))
    log_dir = workdir / "logs"
    log_dir.mkdir()
    (workdir / "temp").mkdir()
    if os.geteuid() == 0:  # its workers run as nobody, as deploy/stack.py arranges
        for path in (workdir, workdir / "temp"):
            path.chmod(0o755)
    port = free_port()
    site = workdir / "tasksite.conf"
    site.write_text(
        render_site(
            NGINX_SITE.read_text(),
            listen=f"{HOST}:{port}",
            web=[f"{HOST}:{web}"],
            ws=[f"{HOST}:{ws}"],
            log_dir=log_dir,
        )
    )
    main = workdir / "nginx.conf"
    main.write_text(_main_conf(workdir, site, log_dir, workers))
    argv = [nginx, "-p", f"{workdir}/", "-c", str(main)]
    checked = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True)
    if checked.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{checked.stderr}")
    failed = True
    with open(log_dir / "nginx.log", "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _wait_listening(port, proc, log_dir / "nginx.log")
        yield Front(proc, port, workdir)
        failed = False
    finally:
        _stack.stop_group(proc)
        if failed:
            print(f"nginx's logs kept in {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited ({proc.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nginx did not listen on {port} within {timeout:g} s")
        time.sleep(0.05)


def _nginx_version(nginx: str) -> str:
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


# -- REST: gunicorn directly and through nginx ------------------------------------------


def _api_token(env: dict[str, str]) -> str:
    """``_stack.api_token`` in a child with Django set up (this process never sets it up)."""
    code = (
        "import os, django; django.setup(); from bench import _stack; "
        "conn = _stack.connect(os.environ['DATABASE_URL']); print(_stack.api_token(conn))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"no API token: {done.stderr[-2000:]}")
    return done.stdout.split()[-1]


def _rest(args: argparse.Namespace, nginx: str, order: list[str]) -> dict[str, Any]:
    tool = _load.generator()
    print(
        f"\nREST GET by id: gunicorn (deploy/gunicorn.conf.py, {args.web_workers} sync "
        f"workers), {args.rows:,} tasks, {args.connections} connections, {args.seconds:g} s "
        f"each, load by {tool}",
        flush=True,
    )
    if tool != "wrk":
        print(
            "  (wrk is not installed: apt-get install -y wrk; the Python generator shares the "
            "cores with the servers, so its figures are lower bounds)"
        )
    with _stack.connect(args.database_url) as conn:
        if conn.execute(f"SELECT count(*) FROM {_stack.TABLE}").fetchone()[0] != args.rows:
            _stack.reset_table(conn)
            _stack.load_tasks(conn, args.rows)
            _stack.settle(conn)
        ids = [
            str(r[0])
            for r in conn.execute(
                f"SELECT task_id FROM {_stack.TABLE} ORDER BY random() LIMIT 1000"
            )
        ]
    env = _stack.stack_env(args.database_url, args.redis_url, WEB_WORKERS=str(args.web_workers))
    auth = {"Authorization": f"Bearer {_api_token(env)}"}
    paths = [f"/task-status/{i}" for i in ids]
    web = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(GUNICORN_CONF),
        "--bind",
        f"{HOST}:{web}",
        "tasksite.wsgi:application",
    ]
    runs: list[dict[str, Any]] = []
    with (
        _stack.running(
            command,
            env,
            health=f"http://{HOST}:{web}/healthz",
            log=ROOT / "var" / f"bench-proxy-gunicorn-{web}.log",
        ),
        nginx_front(nginx, web=web, ws=free_port(), workers=args.nginx_workers) as front,
    ):
        ports = {"direct": web, "nginx": front.port}
        for layout in LAYOUTS:
            _check(ports[layout], paths[0], auth)
            if not args.smoke:  # warm every worker and its connection up, both ways
                _load.measure(
                    HOST, ports[layout], paths[:50], auth, connections=args.connections, seconds=1
                )
        for index, layout in enumerate(order):
            cpu = front.cpu_seconds()
            got = _load.measure(
                HOST, ports[layout], paths, auth, connections=args.connections, seconds=args.seconds
            )
            cpu = front.cpu_seconds() - cpu
            runs.append(
                {
                    "layout": layout,
                    "round": index // 2 + 1,
                    "rps": got["rps"],
                    "p50_ms": got["p50_ms"],
                    "p99_ms": got["p99_ms"],
                    "requests": got["requests"],
                    "errors": got["errors"],
                    "nginx_cpu_us_per_req": (
                        cpu * 1e6 / got["requests"]
                        if layout == "nginx" and got["requests"]
                        else None
                    ),
                }
            )
            print(
                f"  {layout}: {got['rps']:,.0f} req/s, p50 {got['p50_ms']} ms, "
                f"p99 {got['p99_ms']} ms, {got['errors']} errors",
                flush=True,
            )
    summary = [
        _mean_row(
            runs,
            layout,
            ["rps", "p50_ms", "p99_ms", "nginx_cpu_us_per_req"],
            ["requests", "errors"],
        )
        for layout in LAYOUTS
    ]
    print(
        table(
            runs,
            [
                "layout",
                "round",
                "rps",
                "p50_ms",
                "p99_ms",
                "requests",
                "errors",
                "nginx_cpu_us_per_req",
            ],
        )
    )
    return {
        "load_generator": tool,
        "rows": args.rows,
        "connections": args.connections,
        "rest_seconds": args.seconds,
        "web_workers": args.web_workers,
        "rest_runs": runs,
        "rest": summary,
    }


def _check(port: int, path: str, headers: dict[str, str]) -> None:
    """The loaded URL answers 200 with a body on this port: a fast 404 or 502 is no figure."""
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
        if response.status != 200 or not body:
            raise RuntimeError(f"{path} on {port} answered {response.status} {body[:80]!r}")


# -- fan-out: daphne directly and through nginx -------------------------------------------


def _fanout(args: argparse.Namespace, nginx: str, order: list[str]) -> dict[str, Any]:
    rate = int(args.ws_rate) if args.ws_rate == int(args.ws_rate) else args.ws_rate
    print(
        f"\nFan-out: {args.ws_clients:,} WebSocket clients, {rate} changes a second for "
        f"{args.ws_seconds:g} s, daphne directly and through nginx (a fresh daphne each "
        "time); clients, servers, nginx and the producer share the cores",
        flush=True,
    )
    bench = fanout.Bench(
        argparse.Namespace(
            smoke=args.smoke,
            database_url=args.database_url,
            redis_url=args.redis_url,
            slots=args.slots,
            steps=args.steps,
        )
    )
    runs: list[dict[str, Any]] = []
    began = time.time()
    try:
        bench.start_producer()
        # Unmeasured: the producer's first changes pay for its connections and caches,
        # which would count against whichever layout came first.
        warm = bench.tmp / "warm-up.json"
        bench.producer.ask(
            {
                "cmd": "lifecycles",
                "rate": rate,
                "seconds": 0.5,
                "slots": args.slots,
                "steps": args.steps,
                "out": str(warm),
            }
        )
        for index, layout in enumerate(order):
            row = _fanout_once(bench, nginx, layout, args, rate)
            row["round"] = index // 2 + 1
            runs.append(row)
    finally:
        bench.close()
        # The producer's tasks go, so that the REST table keeps the rows it was loaded with.
        with _stack.connect(args.database_url) as conn:
            conn.execute(f"DELETE FROM {_stack.TABLE} WHERE created_at >= %s", [began - 1])
    columns = [
        "layout",
        "round",
        "clients",
        "failed",
        "connect_s",
        "changes",
        "delivered",
        "delivered_per_s",
        "latency_p50_ms",
        "latency_p99_ms",
        "fresh_p50_ms",
        "fresh_p99_ms",
        "fresh_max_ms",
        "lost_transitions",
        "lost_finals",
        "not_delivered",
        "cpu_us_per_msg",
        "nginx_cpu_us_per_msg",
    ]
    print(table(runs, columns))
    keys = [
        "delivered_per_s",
        "latency_p50_ms",
        "latency_p99_ms",
        "fresh_p50_ms",
        "fresh_p99_ms",
        "cpu_us_per_msg",
        "nginx_cpu_us_per_msg",
    ]
    counts = [
        "delivered",
        "expected",
        "failed",
        "lost_transitions",
        "lost_finals",
        "not_delivered",
        "out_of_order",
    ]
    summary = [_mean_row(runs, layout, keys, counts) for layout in LAYOUTS]
    return {
        "clients": args.ws_clients,
        "rate": rate,
        "fanout_seconds": args.ws_seconds,
        "fanout_runs": runs,
        "fanout": summary,
    }


def _fanout_once(
    bench: fanout.Bench, nginx: str, layout: str, args: argparse.Namespace, rate: float
) -> dict[str, Any]:
    bench.start_server("ours")
    try:
        with contextlib.ExitStack() as stack:
            front = None
            url = bench.url
            if layout == "nginx":
                # No gunicorn behind it here: only /ws/ is used.
                front = stack.enter_context(
                    nginx_front(nginx, web=free_port(), ws=bench.port, workers=args.nginx_workers)
                )
                url = bench.url_for(front.port)
            began = time.monotonic()
            connected = bench.start_clients(args.ws_clients, url=url)
            connect_seconds = time.monotonic() - began
            time.sleep(0.2 if args.smoke else 1.0)
            cpu = front.cpu_seconds() if front else 0.0
            row = bench.phase(
                {
                    "cmd": "lifecycles",
                    "rate": rate,
                    "seconds": args.ws_seconds,
                    "slots": args.slots,
                    "steps": args.steps,
                },
                {"layout": layout, "clients": connected["ok"], "rate": rate},
            )
            cpu = front.cpu_seconds() - cpu if front else None
            row.update(
                failed=connected["failed"],
                connect_s=round(connect_seconds, 1),
                nginx_cpu_s=None if cpu is None else round(cpu, 2),
                nginx_cpu_us_per_msg=(
                    cpu * 1e6 / row["delivered"] if cpu is not None and row["delivered"] else None
                ),
            )
            print(
                f"  {layout}: {connected['ok']} of {args.ws_clients} connected in "
                f"{connect_seconds:.1f}s; {row['delivered']:,} delivered, latency p99 "
                f"{_fmt(row['latency_p99_ms'])} ms, freshness p99 {_fmt(row['fresh_p99_ms'])}"
                f" ms, lost transitions {row['lost_transitions']}",
                flush=True,
            )
            bench.stop_clients()
            return row
    finally:
        bench.stop_clients()
        bench.stop_server()


# -- summary and targets ----------------------------------------------------------------------


def _mean_row(
    runs: list[dict[str, Any]], layout: str, means: list[str], sums: list[str]
) -> dict[str, Any]:
    mine = [run for run in runs if run["layout"] == layout]
    row: dict[str, Any] = {"layout": layout, "rounds": len(mine)}
    for key in means:
        values = [run[key] for run in mine if run.get(key) is not None]
        row[key] = sum(values) / len(values) if values else None
    for key in sums:
        row[key] = sum(run.get(key) or 0 for run in mine)
    return row


def _targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(
        name: str, direct: float | None, proxied: float | None, throughput: bool, faults: str
    ) -> None:
        measured = ratio(proxied, direct)
        if throughput:
            goal = f"> {1 - MAX_THROUGHPUT_COST:g} (cost < {MAX_THROUGHPUT_COST:.0%})"
            met = None if measured is None else measured > 1 - MAX_THROUGHPUT_COST
        else:
            goal = f"< {MAX_P99_FACTOR:g}"
            met = None if measured is None else measured < MAX_P99_FACTOR
        verdict = "-" if met is None else ("yes" if met else "NO")
        if faults:
            verdict = f"NO ({faults})"
        out.append(
            {
                "target": name,
                "direct": direct,
                "nginx": proxied,
                "measured": None if measured is None else round(measured, 3),
                "goal": goal,
                "met": verdict,
            }
        )

    rest = {row["layout"]: row for row in figures.get("rest", [])}
    if rest:
        errors = sum(row["errors"] for row in rest.values())
        faults = f"{errors} errors" if errors else ""
        add(
            "REST GET by id: requests/s (nginx x direct)",
            rest["direct"]["rps"],
            rest["nginx"]["rps"],
            True,
            faults,
        )
        add(
            "REST GET by id: latency p99 ms (nginx x direct)",
            rest["direct"]["p99_ms"],
            rest["nginx"]["p99_ms"],
            False,
            faults,
        )
    fan = {row["layout"]: row for row in figures.get("fanout", [])}
    if fan:
        lost = sum(
            row["lost_transitions"] + row["lost_finals"] + row["failed"] for row in fan.values()
        )
        faults = f"{lost} lost transitions/finals or failed connections" if lost else ""
        who = f"fan-out {figures['clients']:,} clients at {figures['rate']}/s"
        add(
            f"{who}: delivered/s (nginx x direct)",
            fan["direct"]["delivered_per_s"],
            fan["nginx"]["delivered_per_s"],
            True,
            faults,
        )
        add(
            f"{who}: freshness p99 ms (nginx x direct)",
            fan["direct"]["fresh_p99_ms"],
            fan["nginx"]["fresh_p99_ms"],
            False,
            faults,
        )
    return out


def _verdict_lines(verdicts: list[dict[str, Any]]) -> list[str]:
    lines = []
    for v in verdicts:
        state = {"yes": "met", "-": "not measured"}.get(v["met"], "MISSED")
        lines.append(
            f"target: {v['target']}: {_fmt(v['nginx'])} against {_fmt(v['direct'])} "
            f"= {_fmt(v['measured'], 2)}x, goal {v['goal']}: {state}"
            + ("" if v["met"] in ("yes", "NO", "-") else f" [{v['met']}]")
        )
    return lines


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
