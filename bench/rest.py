"""REST reads on PostgreSQL with 100,000 tasks, under each candidate way of serving HTTP.

For every layout (daphne; daphne with Django's psycopg pool; uvicorn workers
with the pool; gunicorn sync workers with persistent connections), GET by id
is loaded at 32 connections for a bounded time beside a bare Django view that
reads the same row with one query (``bench.rest_settings``): the ceiling of that
server, Django and PostgreSQL. In the production layout the lists are loaded
too: one operation's first page and a deep page reached through the ``Link``
cursor, each beside the same keyset query in a bare view.

Target: GET by id in the production layout at least 80% of the best bare
layout's requests a second, p99 under 50 ms at 32 connections.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.request
from typing import Any

from bench import _load, _stack
from bench.common import ROOT, busy, free_port, header, ratio, record, table

# The documented production layout (README, "Running in production"): chosen by
# these figures, see docs/performance.md.
PRODUCTION = "gunicorn 4 sync"
LIST_LIMIT = 100
TARGET_SHARE, TARGET_P99_MS = 0.8, 50.0
# REST against the bare view on the same server, same run: GET by id throughput
# and p99, and a list page's throughput.
TARGET_GET_X, TARGET_GET_P99_X, TARGET_LIST_X = 0.9, 1.25, 0.8


def _daphne(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "--websocket-max-message-size",
        "65536",
        "tasksite.asgi:application",
    ]


def _uvicorn(port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--lifespan",
        "off",
        "tasksite.asgi:application",
    ]


def _gunicorn(port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        str(workers),
        "--worker-class",
        "sync",
        "tasksite.wsgi:application",
    ]


# name -> (command for a port, extra environment, modules it needs beyond requirements.txt)
LAYOUTS: dict[str, tuple[Any, dict[str, str], tuple[str, ...]]] = {
    "daphne": (_daphne, {}, ()),
    "daphne + pool": (_daphne, {"BENCH_DB_POOL": "8"}, ("psycopg_pool",)),
    "uvicorn 2 + pool": (
        lambda p: _uvicorn(p, 2),
        {"BENCH_DB_POOL": "8"},
        ("uvicorn", "psycopg_pool"),
    ),
    "gunicorn 2 sync": (lambda p: _gunicorn(p, 2), {}, ("gunicorn",)),
    "gunicorn 4 sync": (lambda p: _gunicorn(p, 4), {}, ("gunicorn",)),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _stack.add_stack_arguments(parser)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument(
        "--layouts", default=",".join(LAYOUTS), help="comma-separated, from: " + ", ".join(LAYOUTS)
    )
    parser.add_argument("--deep", type=int, default=10_000, help="rows before the deep page")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        args.rows, args.seconds, args.connections, args.deep = 2000, 1.0, 4, 250
        args.layouts = PRODUCTION if not _missing(LAYOUTS[PRODUCTION][2]) else "daphne"
    header("rest")
    print(f"before: {busy()}")
    tool = _load.generator()
    if tool != "wrk":
        print(
            "load by the Python generator (wrk is not installed: apt-get install -y wrk; or "
            "BENCH_LOAD=python): its clients share the cores with the server, so its figures "
            "are lower bounds"
        )
    _stack.prepare_database(args.database_url, args.redis_url)
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
        deep_row = conn.execute(
            f"SELECT created_at, task_id FROM {_stack.TABLE} WHERE operation = 'daily_sales' "
            "ORDER BY created_at DESC, task_id DESC OFFSET %s LIMIT 1",
            [args.deep - 1],
        ).fetchone()
    env = _stack.stack_env(
        args.database_url, args.redis_url, DJANGO_SETTINGS_MODULE="bench.rest_settings"
    )
    with _stack.connect(args.database_url) as conn:
        token = _stack.api_token(conn)
    auth = {"Authorization": f"Bearer {token}"}
    rows: list[dict[str, Any]] = []
    for name in args.layouts.split(","):
        command, extra, modules = LAYOUTS[name]
        if _missing(modules):
            print(
                f"{name}: skipped, {', '.join(_missing(modules))} not installed "
                "(pip install it into the venv to measure this layout)"
            )
            continue
        port = free_port()
        with _stack.running(
            command(port),
            {**env, **extra},
            health=f"http://127.0.0.1:{port}/healthz",
            log=ROOT / "var" / f"bench-rest-{port}.log",
        ):
            cases = [
                ("GET by id", [f"/task-status/{i}" for i in ids], [f"/bare/task/{i}" for i in ids])
            ]
            if name == PRODUCTION:
                cases += _list_cases(port, auth, args.deep, deep_row, args.smoke)
            if not args.smoke:  # warm every worker and its connection up
                _load.measure(
                    "127.0.0.1",
                    port,
                    cases[0][1][:50],
                    auth,
                    connections=args.connections,
                    seconds=1,
                )
            for endpoint, rest_paths, bare_paths in cases:
                _check(port, rest_paths[0], auth)
                _check(port, bare_paths[0], {})
                ours = _load.measure(
                    "127.0.0.1",
                    port,
                    rest_paths,
                    auth,
                    connections=args.connections,
                    seconds=args.seconds,
                )
                bare = _load.measure(
                    "127.0.0.1",
                    port,
                    bare_paths,
                    {},
                    connections=args.connections,
                    seconds=args.seconds,
                )
                rows.append(
                    {
                        "layout": name,
                        "endpoint": endpoint,
                        "rest_rps": ours["rps"],
                        "rest_p50_ms": ours["p50_ms"],
                        "rest_p99_ms": ours["p99_ms"],
                        "rest_errors": ours["errors"],
                        "bare_rps": bare["rps"],
                        "bare_p50_ms": bare["p50_ms"],
                        "bare_p99_ms": bare["p99_ms"],
                        "bare_errors": bare["errors"],
                        "rest_vs_bare": _round(ratio(ours["rps"], bare["rps"])),
                    }
                )
    print(
        f"PostgreSQL, {args.rows:,} tasks, {args.connections} connections, "
        f"{args.seconds:g} s each, load by {tool}; lists: limit={LIST_LIMIT}, "
        f"deep page = {args.deep:,} rows in"
    )
    print(
        table(
            rows,
            [
                "layout",
                "endpoint",
                "rest_rps",
                "rest_p50_ms",
                "rest_p99_ms",
                "bare_rps",
                "bare_p50_ms",
                "bare_p99_ms",
                "rest_vs_bare",
                "rest_errors",
                "bare_errors",
            ],
        )
    )
    figures = _verdict(rows, tool)
    figures.update(
        {"rows": args.rows, "connections": args.connections, "seconds": args.seconds, "runs": rows}
    )
    if not args.no_record:
        record("rest", figures, smoke=args.smoke)
    return figures


def _verdict(rows: list[dict[str, Any]], tool: str) -> dict[str, Any]:
    by_id = [row for row in rows if row["endpoint"] == "GET by id"]
    best_bare = max(by_id, key=lambda row: row["bare_rps"], default=None)
    prod = next((row for row in by_id if row["layout"] == PRODUCTION), None)
    figures: dict[str, Any] = {"load_generator": tool, "production_layout": PRODUCTION}
    if best_bare and prod:
        share = prod["rest_rps"] / best_bare["bare_rps"]
        figures.update(
            {
                "best_bare_layout": best_bare["layout"],
                "best_bare_rps": best_bare["bare_rps"],
                "production_rest_rps": prod["rest_rps"],
                "production_rest_p99_ms": prod["rest_p99_ms"],
                "share_of_best_bare": round(share, 3),
                "target_met": share >= TARGET_SHARE
                and prod["rest_p99_ms"] < TARGET_P99_MS
                and not prod["rest_errors"],
            }
        )
        print(
            f"target: {PRODUCTION} GET by id {prod['rest_rps']:,.0f} req/s = {share:.0%} of the "
            f"best bare ({best_bare['layout']}, {best_bare['bare_rps']:,.0f}), p99 "
            f"{prod['rest_p99_ms']} ms: {'met' if figures['target_met'] else 'MISSED'} "
            f"(>= {TARGET_SHARE:.0%}, p99 < {TARGET_P99_MS:g} ms)"
        )
    checks = []
    for row in rows:
        if row["layout"] != PRODUCTION:
            continue
        p99_x = ratio(row["rest_p99_ms"], row["bare_p99_ms"])
        errors = bool(row["rest_errors"] or row["bare_errors"])
        if row["endpoint"] == "GET by id":
            checks.append(("GET by id, req/s x bare", row["rest_vs_bare"], TARGET_GET_X, errors))
            checks.append(("GET by id, p99 x bare", p99_x, TARGET_GET_P99_X, errors))
        elif row["endpoint"] == "list, first page":
            checks.append(("list page, req/s x bare", row["rest_vs_bare"], TARGET_LIST_X, errors))
    figures["against_bare"] = []
    for name, value, goal, errors in checks:
        at_most = "p99" in name
        met = value is not None and not errors and (value <= goal if at_most else value >= goal)
        figures["against_bare"].append({"target": name, "measured": value, "met": met})
        print(
            f"target: {PRODUCTION} {name} {_round(value)} "
            f"({'<=' if at_most else '>='} {goal:g}): {'met' if met else 'MISSED'}"
        )
    return figures


def _list_cases(
    port: int, auth: dict[str, str], deep: int, deep_row: tuple[float, Any] | None, smoke: bool
) -> list[tuple[str, list[str], list[str]]]:
    first = f"/task-status?operation=daily_sales&limit={LIST_LIMIT}"
    cases = (
        []
        if smoke
        else [
            ("list, first page", [first], [f"/bare/list?operation=daily_sales&limit={LIST_LIMIT}"])
        ]
    )
    if deep_row is None:
        return cases
    # Walk the Link cursor to the deep page in big steps (the cursor is signed and
    # bound to the filters, not to the page size), then load that page at LIST_LIMIT.
    step = min(1000, deep)
    url = f"/task-status?operation=daily_sales&limit={step}"
    for _ in range(deep // step):
        link = _get(port, url, auth).headers["Link"]
        url = re.search(r"<http://[^/]+([^>]+)>", link).group(1)
    deep_url = re.sub(r"limit=\d+", f"limit={LIST_LIMIT}", url)
    created, task_id = deep_row
    cases.append(
        (
            f"list, page {deep:,} rows deep",
            [deep_url],
            [
                f"/bare/list?operation=daily_sales&limit={LIST_LIMIT}"
                f"&created={created!r}&task={task_id}"
            ],
        )
    )
    return cases


def _get(port: int, path: str, headers: dict[str, str]):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    return urllib.request.urlopen(request, timeout=10)


def _check(port: int, path: str, headers: dict[str, str]) -> None:
    """Every loaded URL answers 200 with a body first: a fast 404 is no figure."""
    with _get(port, path, headers) as response:
        body = json.loads(response.read())
        if response.status != 200 or not body:
            raise RuntimeError(f"{path} answered {response.status} {str(body)[:80]}")


def _missing(modules: tuple[str, ...]) -> list[str]:
    import importlib.util

    return [module for module in modules if importlib.util.find_spec(module) is None]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
