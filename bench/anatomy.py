"""Where an idle WebSocket connection's bytes and a handshake's time go, in our daphne.

``python -m bench.anatomy --clients 1000`` starts daphne as the fan-out bench
does (``bench.fanout.Bench``), but under ``bench.traced_server``: a tracemalloc
snapshot before and after the clients connect, compared by the allocating line
and by file, per connection. ``--mode profile`` instead profiles the server
with cProfile while they connect (the handshakes), ``--since N`` makes every
client arrive with ``since=`` N seconds ago (a reconnect storm's catch-up). Both tracers
slow the server down: read shares, not absolute times.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import signal
import sys
import time
import tracemalloc
from pathlib import Path

from bench.fanout import Bench
from bench.fanout import add_arguments as fanout_arguments


def _signal_and_wait(bench: Bench, suffix: str) -> Path:
    before = set(bench.tmp.glob(f"*.{suffix}"))
    bench.server.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = set(bench.tmp.glob(f"*.{suffix}")) - before
        if new:
            return new.pop()
        time.sleep(0.1)
    raise RuntimeError("the traced server wrote nothing")


def _short(filename: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    root = str(Path(__file__).resolve().parent.parent) + "/"
    return filename.replace(root, "")


def heap(bench: Bench, clients: int, url: str, top: int) -> None:
    first = tracemalloc.Snapshot.load(str(_signal_and_wait(bench, "snap")))
    connected = bench.start_clients(clients, url=url)["ok"]
    time.sleep(3.0)  # daphne lets go of an upgraded HTTP request on a 1 s timer
    second = tracemalloc.Snapshot.load(str(_signal_and_wait(bench, "snap")))
    bench.stop_clients()
    total = sum(s.size_diff for s in second.compare_to(first, "filename"))
    print(f"{connected} connections: {total / connected:,.0f} bytes each (traced Python heap)")
    for key in ("filename", "lineno"):
        print(f"\nby {key}, bytes per connection (blocks per connection)")
        for stat in second.compare_to(first, key)[:top]:
            frame = stat.traceback[0]
            where = _short(frame.filename) + (f":{frame.lineno}" if key == "lineno" else "")
            print(f"{stat.size_diff / connected:9,.0f} {stat.count_diff / connected:6.1f}  {where}")
    print("\nlargest allocations with their callers")
    for stat in second.compare_to(first, "traceback")[:top]:
        print(f"{stat.size_diff / connected:9,.0f} bytes per connection")
        for frame in list(stat.traceback)[:6]:
            print(f"            {_short(frame.filename)}:{frame.lineno}")


def profile(bench: Bench, clients: int, url: str, top: int) -> None:
    bench.server.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    started = time.monotonic()
    connected = bench.start_clients(clients, url=url)["ok"]
    took = time.monotonic() - started
    stats_path = _signal_and_wait(bench, "prof")
    bench.stop_clients()
    out = io.StringIO()
    stats = pstats.Stats(str(stats_path), stream=out)
    total = stats.total_tt  # type: ignore[attr-defined]
    each = total * 1e6 / connected
    print(f"{connected} handshakes in {took:.1f}s (profiled); {each:,.0f} µs of CPU each")
    for order in ("tottime", "cumulative"):
        stats.sort_stats(order).print_stats(top)
    print(out.getvalue())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.anatomy")
    fanout_arguments(parser)
    parser.add_argument("--mode", choices=["heap", "profile"], default="heap")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    clients = int(args.clients.split(",")[0]) if "," not in args.clients else 1000
    bench = Bench(args)
    bench.daphne = [sys.executable, "-m", "bench.traced_server"]
    bench.start_seconds = 180.0  # a traced start-up is slow
    bench.env.update(BENCH_TRACE=args.mode, BENCH_TRACE_DIR=str(bench.tmp))
    try:
        bench.prepare_database()
        bench.start_producer()
        if args.since:  # something to catch up on: 50 tasks changed just now
            bench.producer.ask({"cmd": "create", "count": 50, "out": str(bench.tmp / "ids.txt")})
        bench.start_server("ours")
        (heap if args.mode == "heap" else profile)(bench, clients, bench.url, args.top)
    finally:
        bench.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
