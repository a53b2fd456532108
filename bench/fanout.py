"""Fan-out benchmark: one producer, many WebSocket clients, our daphne vs a bare limit.

For each number of clients, a server is started (our daphne on PostgreSQL and
Redis, then the bare ``websockets`` limit of ``bench/fanout_limit.py`` fed by
the same updates channel), the clients connect (memory per idle connection is
read then), and one producer reports through ``tasks.tracker`` at fixed rates
and then as fast as it can. The clients check what they got against the
producer's record of every call: latency, freshness, lost transitions and
final states. Then the filtered run (clients on one task each) and Redis's
commands per change. Everything it starts is stopped in ``finally``.

``python -m bench fanout`` (full size, a few minutes) or ``--smoke``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench._procs import RssSampler, cpu_seconds, rss_bytes, stop
from bench.common import ROOT, free_port, header, record, table
from bench.fanout_client import raise_open_files
from bench.fanout_report import (
    FANOUT_COLUMNS,
    RATIO_KEYS,
    fmt,
    plot,
    redis_calls,
    summarize,
    targets,
    with_ratios,
)

TERMINAL_WAIT = 10.0
PHASE_SECONDS = {20: 6.0, 100: 5.0, 500: 4.0, 0: 4.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", default="100,1000,5000", help="comma-separated counts")
    parser.add_argument("--rates", default="20,100,500,0", help="changes a second; 0 = flat out")
    parser.add_argument("--servers", default="ours,limit")
    parser.add_argument("--slots", type=int, default=10, help="tasks live at once")
    parser.add_argument("--steps", type=int, default=25, help="changes in one task's life")
    parser.add_argument("--filtered", type=int, default=1000, help="clients on one task each")
    parser.add_argument("--filtered-all", type=int, default=100, help="clients on everything")
    parser.add_argument("--filtered-rate", type=float, default=200.0)
    parser.add_argument(
        "--since",
        type=int,
        default=0,
        metavar="SECONDS",
        help="clients connect with since= this many seconds ago, as after a restart",
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_FANOUT_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_fanout"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_FANOUT_REDIS_URL", "redis://127.0.0.1:6379/7")
    )


# -- processes -----------------------------------------------------------------


class Lines:
    """A child driven by JSON lines on stdin/stdout."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )

    def send(self, message: dict) -> None:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def read(self, timeout: float = 120.0) -> dict:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))
        reader.daemon = True
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            raise RuntimeError(
                f"{self.proc.args[2] if len(self.proc.args) > 2 else 'child'} "
                f"gave no answer (see {self.log.name})"
            )
        return json.loads(result[0])

    def ask(self, message: dict, timeout: float = 120.0) -> dict:
        self.send(message)
        return self.read(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send({"cmd": "quit"})
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                stop(self.proc)
        self.log.close()


class Bench:
    """Everything one run starts, so that ``close`` stops all of it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
        self.channel = f"bench-fanout:{uuid.uuid4().hex[:12]}"
        self.env = dict(os.environ)
        self.env.update(
            DJANGO_SETTINGS_MODULE="tasksite.settings",
            DATABASE_URL=args.database_url,
            REDIS_URL=args.redis_url,
            TASK_UPDATES_CHANNEL=self.channel,
            TASK_PROGRESS_MIN_INTERVAL="0",
            TASKSITE_QUIET_DEV_WARNING="1",
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        self.server: subprocess.Popen | None = None
        self.server_kind = ""
        self.producer: Lines | None = None
        self.clients: list[Lines] = []
        self.token = ""
        self.port = 0
        # how "ours" is started: daphne itself, or daphne under a tracer (bench.anatomy)
        self.daphne = [sys.executable, "-m", "daphne"]
        self.start_seconds = 30.0

    # -- set-up ------------------------------------------------------------

    def prepare_database(self) -> None:
        """Create the benchmark's own database if missing, and migrate it."""
        import psycopg

        parts = urlsplit(self.args.database_url)
        name = parts.path.lstrip("/")
        admin = parts._replace(path="/postgres").geturl()
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')

    def start_producer(self) -> None:
        """The producer, which also migrates the database (one Django start-up, not two)."""
        self.producer = Lines(
            [sys.executable, "-m", "bench.fanout_producer"], self.env, self.tmp / "producer.log"
        )
        self.producer.ask({"cmd": "migrate"})
        self.token = self.producer.ask({"cmd": "token"})["token"]

    def start_server(self, kind: str) -> None:
        self.port = free_port()
        log = open(self.tmp / f"server-{kind}.log", "ab")
        if kind == "ours":
            argv = [
                *self.daphne,
                "-e",
                f"tcp:port={self.port}:interface=127.0.0.1:backlog=4096",
                "--websocket-max-message-size",
                "65536",
                "tasksite.asgi:application",
            ]
        else:
            argv = [
                sys.executable,
                "-m",
                "bench.fanout_limit",
                str(self.port),
                self.args.redis_url,
                self.channel,
            ]
        self.server = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.server_kind = kind
        deadline = time.monotonic() + self.start_seconds
        while True:
            if self.server.poll() is not None:
                raise RuntimeError(f"{kind} server exited; see {self.tmp}/server-{kind}.log")
            try:
                if kind == "ours":
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                        pass
                    self._warm_up()
                else:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        pass
                    time.sleep(0.3)  # its subscription is made just after the listen
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{kind} server did not come up: {self.log_tail(kind)}"
                    ) from None
                time.sleep(0.1)

    def log_tail(self, kind: str) -> str:
        """The end of a server's log, for an error message (the directory goes at close)."""
        try:
            return (self.tmp / f"server-{kind}.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def _warm_up(self) -> None:
        """One connection first, so lazy imports and the hub are not counted per client."""
        from websockets.sync.client import connect

        with connect(self.url) as ws:
            ws.recv(timeout=10)

    @property
    def url(self) -> str:
        """The WebSocket URL of the server itself."""
        return self.url_for(self.port)

    def url_for(self, port: int) -> str:
        """The WebSocket URL on ``port``: the server's own, or a proxy's in front of it.

        With ``--since N`` every client asks for a catch-up of the last N
        seconds, as clients reconnecting after a restart do with the
        ``updated_at`` of the last update they saw.
        """
        url = f"ws://127.0.0.1:{port}/ws/task-status?access_token={self.token}"
        if getattr(self.args, "since", 0):
            url += f"&since={int(time.time()) - self.args.since}"
        return url

    def stop_server(self) -> None:
        stop(self.server)
        self.server = None

    def start_clients(
        self, count: int, task_ids: list[str] | None = None, url: str | None = None
    ) -> dict:
        """``count`` connections over a few client processes; returns how it went.

        They connect to ``url`` (default: the server's own, ``self.url``).
        """
        procs = 1 if count <= 200 else 2 if count <= 2000 else 4
        if self.args.smoke:
            procs = 1
        shares = [count // procs + (1 if i < count % procs else 0) for i in range(procs)]
        start = 0
        for index, share in enumerate(shares):
            argv = [
                sys.executable,
                "-m",
                "bench.fanout_client",
                url or self.url,
                "--connections",
                str(share),
                "--sampled",
                str(min(share, 25)),
            ]
            if task_ids is not None:
                ids_path = self.tmp / f"ids-{len(self.clients)}.txt"
                ids_path.write_text("\n".join(task_ids[start : start + share]) + "\n")
                argv += ["--task-ids", str(ids_path)]
            start += share
            self.clients.append(
                Lines(argv, self.env, self.tmp / f"client-{len(self.clients)}-{index}.log")
            )
        ok = failed = 0
        for client in self.clients[-procs:]:
            answer = client.read(timeout=180)
            ok += answer["ok"]
            failed += answer["failed"]
        return {"ok": ok, "failed": failed}

    def stop_clients(self) -> None:
        for client in self.clients:
            client.stop()
        self.clients = []

    def close(self) -> None:
        self.stop_clients()
        if self.producer is not None:
            self.producer.stop()
            self.producer = None
        self.stop_server()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- one measured phase ----------------------------------------------------

    def phase(self, command: dict, label: dict) -> dict[str, Any]:
        for client in self.clients:
            client.send({"cmd": "reset"})
        for client in self.clients:
            client.read()
        pid = self.server.pid
        truth = self.tmp / f"truth-{uuid.uuid4().hex[:8]}.json"
        sampler = RssSampler(pid)
        redis_before = redis_calls(self.args.redis_url)
        cpu_before = cpu_seconds(pid)
        clients_before = sum(cpu_seconds(c.proc.pid) for c in self.clients)
        sampler.start()
        done = self.producer.ask({**command, "out": str(truth)}, timeout=command["seconds"] + 120)
        drained = self.drain(done["last_call"])
        cpu_after = cpu_seconds(pid)
        clients_cpu = sum(cpu_seconds(c.proc.pid) for c in self.clients) - clients_before
        redis_after = redis_calls(self.args.redis_url)
        sampler.stop()
        reports = []
        for client in self.clients:
            client.send({"cmd": "report", "truth": str(truth)})
        for client in self.clients:
            reports.append(client.read(timeout=300))
        truth.unlink(missing_ok=True)
        row = summarize(
            label,
            done,
            drained,
            reports,
            cpu_after - cpu_before,
            sampler,
            redis_before,
            redis_after,
        )
        row["clients_cpu_s"] = round(clients_cpu, 2)
        # PostgreSQL statements the producer's tracker made per change, by kind
        row["sql_per_change"] = {
            verb: round(n / done["changes"], 3)
            for verb, n in sorted(done.get("statements", {}).items())
            if done["changes"]
        }
        return row

    def drain(self, last_call: float) -> bool:
        """Wait until no client has received anything for a second (at most 10 s)."""
        deadline = time.time() + TERMINAL_WAIT
        quiet = 0.3 if self.args.smoke else 1.0
        previous, quiet_since = -1, time.time()
        while time.time() < deadline:
            total = 0
            for client in self.clients:
                client.send({"cmd": "stats"})
            for client in self.clients:
                total += client.read()["count"]
            now = time.time()
            if total != previous:
                previous, quiet_since = total, now
            elif now - quiet_since >= quiet and now - last_call >= quiet:
                return True
            time.sleep(0.1 if self.args.smoke else 0.2)
        return False


# -- the runs --------------------------------------------------------------------


def fan_out(
    bench: Bench, kind: str, clients: int, rates: list[float], then_filtered: bool
) -> tuple[list, dict, dict | None]:
    """Fan-out at each rate to ``clients`` clients; then, if asked, the filtered run."""
    args = bench.args
    bench.start_server(kind)
    try:
        rss_before = rss_bytes(bench.server.pid)
        server_cpu = cpu_seconds(bench.server.pid)
        started = time.monotonic()
        connected = bench.start_clients(clients)
        connect_seconds = time.monotonic() - started
        server_cpu = cpu_seconds(bench.server.pid) - server_cpu
        # the client processes started with the connect: their CPU so far is its cost
        clients_cpu = sum(cpu_seconds(c.proc.pid) for c in bench.clients)
        time.sleep(0.2 if args.smoke else 1.0)
        rss_idle = rss_bytes(bench.server.pid)
        idle = {
            "server": kind,
            "clients": clients,
            "connected": connected["ok"],
            "failed": connected["failed"],
            "connect_s": round(connect_seconds, 1),
            "connect_server_cpu_s": round(server_cpu, 2),
            "connect_clients_cpu_s": round(clients_cpu, 2),
            "connect_clients_cores": round(clients_cpu / connect_seconds, 2)
            if connect_seconds
            else None,
            "rss_before_mib": rss_before / 2**20,
            "rss_idle_mib": rss_idle / 2**20,
            "kib_per_conn": (rss_idle - rss_before) / 1024 / max(1, connected["ok"]),
        }
        print(
            f"  {kind}: {connected['ok']} of {clients} connected in {connect_seconds:.1f}s, "
            f"{idle['kib_per_conn']:.1f} KiB per idle connection; CPU while connecting: "
            f"server {server_cpu:.1f}s, clients {clients_cpu:.1f}s",
            flush=True,
        )
        rows = []
        for rate in rates:
            seconds = 0.5 if args.smoke else PHASE_SECONDS.get(int(rate), 4.0)
            row = bench.phase(
                {
                    "cmd": "lifecycles",
                    "rate": rate,
                    "seconds": seconds,
                    "slots": args.slots,
                    "steps": args.steps,
                },
                {"server": kind, "clients": connected["ok"], "rate": rate or "max"},
            )
            print(
                f"    rate {row['rate']}: {row['delivered']:,} delivered, "
                f"p99 {fmt(row['latency_p99_ms'])} ms, fresh p99 {fmt(row['fresh_p99_ms'])} "
                f"ms, lost transitions {row['lost_transitions']}; server CPU "
                f"{fmt(row['cpu_us_per_msg'])} µs/msg, Redis {fmt(row['redis_cmds_per_change'])} "
                f"commands/change, tracker SQL per change {row['sql_per_change']}",
                flush=True,
            )
            rows.append(row)
        bench.stop_clients()
        return rows, idle, filtered(bench, kind) if then_filtered else None
    finally:
        bench.stop_clients()
        bench.stop_server()


def filtered(bench: Bench, kind: str) -> dict[str, Any]:
    """Clients on one task each plus a few on everything; updates to random tasks.

    Run on the server the last fan-out used, once its clients have gone.
    """
    args = bench.args
    per_task, everything = (10, 3) if args.smoke else (args.filtered, args.filtered_all)
    print(
        f"  filtered on {kind}: {per_task} clients on one task each, {everything} on all",
        flush=True,
    )
    try:
        ids_path = bench.tmp / "filtered-ids.txt"
        bench.producer.ask({"cmd": "create", "count": per_task, "out": str(ids_path)})
        ids = ids_path.read_text().split()
        one = bench.start_clients(per_task, task_ids=ids)
        all_ = bench.start_clients(everything)
        time.sleep(0.1 if args.smoke else 0.5)
        row = bench.phase(
            {"cmd": "random", "rate": args.filtered_rate, "seconds": 0.5 if args.smoke else 5.0},
            {
                "server": kind,
                "one_task_clients": one["ok"],
                "all_clients": all_["ok"],
                "rate": args.filtered_rate,
            },
        )
        row["deliveries_per_change"] = row["delivered"] / row["changes"] if row["changes"] else 0
        return row
    finally:
        bench.stop_clients()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every fan-out measurement; print the tables; write bench/results/fanout.json."""
    header("fanout")
    raise_open_files()
    clients_list = [10] if args.smoke else [int(c) for c in args.clients.split(",") if c]
    rates = [20.0, 0.0] if args.smoke else [float(r) for r in args.rates.split(",") if r]
    rates = [int(r) if r == int(r) else r for r in rates]
    kinds = [k for k in args.servers.split(",") if k]
    print(
        "Clients, server and producer share this machine's cores; the producer runs with "
        "TASK_PROGRESS_MIN_INTERVAL=0 so every tracker call is a published change."
    )
    bench = Bench(args)
    rows: dict[str, list[dict]] = {kind: [] for kind in kinds}
    idle: list[dict] = []
    filtered_rows: list[dict] = []
    started = time.monotonic()
    try:
        bench.prepare_database()
        bench.start_producer()
        for clients in clients_list:
            last = clients == clients_list[-1] and bool(args.filtered)
            for kind in kinds:
                print(f"{clients} clients on {kind}", flush=True)
                phase_rows, idle_row, filtered_row = fan_out(bench, kind, clients, rates, last)
                rows[kind] += phase_rows
                idle.append(idle_row)
                if filtered_row is not None:
                    filtered_rows.append(filtered_row)
    finally:
        bench.close()
    ours, limit = rows.get("ours", []), rows.get("limit", [])
    print("\nFan-out (ours; *_x = ratio to the limit of the same run)")
    print(
        table(
            with_ratios(ours, limit, RATIO_KEYS),
            FANOUT_COLUMNS[1:] + [f"{k}_x" for k in RATIO_KEYS],
        )
    )
    print("\nFan-out (limit: bare websockets + one Redis subscription)")
    print(table(limit, FANOUT_COLUMNS[1:]))
    print("\nIdle connections")
    print(table(idle))
    print("\nFiltered fan-out (clients on one task each, plus clients on everything)")
    print(
        table(
            filtered_rows,
            [
                "server",
                "one_task_clients",
                "all_clients",
                "rate",
                "changes",
                "delivered",
                "deliveries_per_change",
                "cpu_us_per_change",
                "cpu_us_per_msg",
                "latency_p99_ms",
                "not_delivered",
                "unwanted",
                "redis_cmds_per_change",
            ],
        )
    )
    verdicts = targets(ours, limit, idle, filtered_rows)
    print("\nTargets")
    print(table(verdicts))
    print(f"\nfan-out bench took {time.monotonic() - started:.0f}s")
    figures = {
        "fanout": ours + limit,
        "idle": idle,
        "filtered": filtered_rows,
        "targets": verdicts,
        "seconds": round(time.monotonic() - started),
    }
    record("fanout", figures, smoke=args.smoke)
    if not args.smoke and not args.no_plot:
        with contextlib.suppress(ImportError):
            plot(figures, ROOT / "docs" / "fanout.png")
    return figures
