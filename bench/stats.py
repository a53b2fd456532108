"""``GET /operations/{operation}/stats`` over a million tasks, beside its SQL alone.

The endpoint (``operations.overview.stats``) answers with an operation's last 30
finished runs, their median and 95th percentile duration and the shares that
failed or ended with errors, from one PostgreSQL query that walks the
``task_op_created`` index ``(operation, -created_at, -task_id)``.

- **Data**: 1,000,000 tasks in ``bench_store`` (one ``INSERT ... SELECT
  generate_series``, the shape of ``_stack.load_tasks``, then VACUUM ANALYZE and
  CHECKPOINT), the seven operations in turn, created over the last 365 days,
  about 97% finished (81% completed, 10% with errors, 6% failed, durations from
  15 s to about 10 minutes, skewed short), the rest started or processing (the
  newest two of each operation still running). Kept for the next run when it is
  already there (same count, all tagged ``bench-stats``).
- **The query**: taken from the project itself. A child process sets Django up
  on the bench's database and runs ``overview.stats`` once per operation under an
  ``execute_wrapper``, which records the SQL text and parameters as Django hands
  them to psycopg (and checks that it is one query).
- **SQL alone** (the baseline, a plain SQL aggregate): that text and those
  parameters run in a loop on one psycopg connection with client-side binding
  (a ``ClientCursor``, as Django's backend uses), no Django or DRF around it;
  per-query time, fetch included: p50, p99, queries a second.
- **The endpoint**: one gunicorn as production runs it (``-c
  deploy/gunicorn.conf.py``, ``WEB_WORKERS`` sync workers, ``tasksite.settings``),
  authenticated with a local API token of a plain reader (every personal-data
  reader role, as ``bench/rest.py``), loaded by ``bench/_load.py`` (wrk when
  installed) per operation at 1 and 8 connections: requests a second, p50, p99.
- **The plan**: ``EXPLAIN (ANALYZE, BUFFERS)`` of the query once, printed, and
  checked for an index scan (no sequential scan of the table).

Targets: the endpoint's p99 under 50 ms (worst over operations and connection
counts), the SQL alone p99 under 5 ms, at 1,000,000 rows.

``python -m bench stats`` (full size: a few minutes, the first load included),
``--smoke`` on tiny numbers in about 20 s (``tests/test_bench_stats_smoke.py``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any

from bench import _load, _stack
from bench.common import (
    ROOT,
    busy,
    finish,
    free_port,
    header,
    percentile,
    table,
)
from deploy.stack import GUNICORN_CONF

HOST = "127.0.0.1"
TAG = "bench-stats"
INDEX = "task_op_created"
DEFAULT_OPERATIONS = "daily_sales,invoice_sync,email_tips"
TARGET_HTTP_P99_MS = 50.0
TARGET_SQL_P99_MS = 5.0
HISTORY_SPAN = 365 * 86400  # created_at spread over the last year


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _stack.add_stack_arguments(parser)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--operations",
        default=DEFAULT_OPERATIONS,
        help="comma-separated, from: " + ", ".join(_stack.OPERATIONS),
    )
    parser.add_argument(
        "--connections", default="1,8", help="comma-separated HTTP connection counts, each measured"
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="per HTTP measurement")
    parser.add_argument("--queries", type=int, default=2000, help="timed SQL queries per operation")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn's WEB_WORKERS")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        args.rows, args.seconds, args.queries, args.web_workers = 2000, 1.0, 100, 2
        args.operations, args.connections = "daily_sales,email_tips", "1,4"
    operations = [op for op in args.operations.split(",") if op]
    unknown = sorted(set(operations) - set(_stack.OPERATIONS))
    if unknown:
        raise ValueError(f"unknown operation {', '.join(unknown)}")
    connections = [int(c) for c in args.connections.split(",") if c]
    header("stats")
    load_before = busy()
    print(f"before: {load_before}", flush=True)
    started = time.monotonic()
    tool = _load.generator()
    _stack.prepare_database(args.database_url, args.redis_url)
    with _stack.connect(args.database_url) as conn:
        load_s = _ensure_rows(conn, args.rows)
        server = conn.info.server_version
    env = _stack.stack_env(args.database_url, args.redis_url, WEB_WORKERS=str(args.web_workers))
    captured = _capture(env, operations)

    # 1. The SQL alone, before any server runs; 2. its plan, once, on warm buffers.
    rows: list[dict[str, Any]] = []
    sql_by_op: dict[str, dict[str, Any]] = {}
    with _stack.connect(args.database_url) as conn:
        for op in operations:
            sql_by_op[op] = _sql_loop(conn, captured["queries"][op], args.queries)
        plan = _explain(conn, captured["queries"][operations[0]])
    print(f"\nEXPLAIN (ANALYZE, BUFFERS) of the stats query for {operations[0]}:")
    print("\n".join("  " + line for line in plan["text"].splitlines()))

    # 3. The endpoint under gunicorn, as production runs it.
    http = _http(env, captured["token"], operations, connections, args)
    for op in operations:
        sql = sql_by_op[op]
        rows.append(
            {
                "operation": op,
                "measure": "SQL alone (psycopg)",
                "connections": 1,
                "per_s": sql["qps"],
                "p50_ms": sql["p50_ms"],
                "p99_ms": sql["p99_ms"],
                "errors": 0,
                "runs": sql["runs"],
                "p50_vs_sql": 1.0,
            }
        )
        for run_ in http:
            if run_["operation"] == op:
                rows.append({**run_, "p50_vs_sql": _ratio(run_["p50_ms"], sql["p50_ms"])})

    pg_major = f"{server // 10000}.{server % 10000}"
    print(
        f"\nPostgreSQL {pg_major}, {args.rows:,} tasks ({_stack.TABLE}), gunicorn "
        f"(deploy/gunicorn.conf.py, {args.web_workers} sync workers), {args.seconds:g} s per "
        f"HTTP figure, load by {tool}; SQL alone: {args.queries:,} queries per operation on one "
        "connection, fetch included"
    )
    if tool != "wrk":
        print(
            "(wrk is not installed: apt-get install -y wrk; the Python generator shares the "
            "cores with the server, so its HTTP figures are lower bounds)"
        )
    print(
        table(
            rows,
            [
                "operation",
                "measure",
                "connections",
                "per_s",
                "p50_ms",
                "p99_ms",
                "p50_vs_sql",
                "runs",
                "errors",
            ],
        )
    )
    figures: dict[str, Any] = {
        "rows": args.rows,
        "load_s": load_s,
        "postgresql": pg_major,
        "load_generator": tool,
        "web_workers": args.web_workers,
        "seconds": args.seconds,
        "queries": args.queries,
        "operations": operations,
        "connections": connections,
        "load_before": load_before,
        "sql_text": captured["queries"][operations[0]]["sql"],
        "django_queries": {op: captured["queries"][op]["count"] for op in operations},
        "sql": sql_by_op,
        "http": http,
        "runs": rows,
        "plan": {k: v for k, v in plan.items() if k != "text"},
        "plan_text": plan["text"],
    }
    figures["targets"] = _verdict(figures)
    figures["load_after"] = busy()
    figures["elapsed_s"] = round(time.monotonic() - started)
    print(f"after: {figures['load_after']}; stats bench took {figures['elapsed_s']}s")
    finish("stats", figures, args)
    return figures


# -- the data ------------------------------------------------------------------------


def _ensure_rows(conn, count: int) -> float | None:
    """Load ``count`` stats tasks unless exactly those are there; the seconds it took."""
    total, ours = conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE launched_by = %s) FROM {_stack.TABLE}", [TAG]
    ).fetchone()
    if total == ours == count:
        print(f"{count:,} tasks already loaded (tagged {TAG}): kept", flush=True)
        return None
    print(f"loading {count:,} tasks ...", flush=True)
    _stack.reset_table(conn)
    seconds = load_stats_tasks(conn, count)
    _stack.settle(conn)
    print(f"loaded in {seconds:.1f} s (VACUUM ANALYZE and CHECKPOINT after)", flush=True)
    return round(seconds, 1)


def load_stats_tasks(conn, count: int) -> float:
    """``_stack.load_tasks``'s one ``INSERT ... SELECT generate_series``, with a history.

    ``load_tasks`` writes every row ``completed`` 30 s after it was created; the
    stats need what a real history holds: finished runs of every kind with
    durations that differ, some still running or abandoned, over the last year.
    Seeded, so that every load holds the same statuses and durations.
    """
    started = time.perf_counter()
    now = time.time()
    conn.execute("SELECT setseed(0.42)")
    conn.execute(
        f"""
        INSERT INTO {_stack.TABLE} (task_id, operation, status, progress_current,
            progress_total, progress_message, result, error, created_at, updated_at,
            expires_at, version, error_count, request_id, launched_by, params,
            cancel_requested_by)
        SELECT gen_random_uuid(), (%(ops)s::text[])[1 + i %% 7], s.status,
            CASE WHEN s.status IN ('started', 'processing') THEN 40 ELSE 100 END, 100,
            'Location ' || CASE WHEN s.status IN ('started', 'processing') THEN 40 ELSE 100 END
                || ' of 100',
            CASE WHEN s.status IN ('completed', 'completed_with_errors')
                THEN '{{"locations": 100}}'::jsonb END,
            CASE WHEN s.status = 'failed' THEN 'bench: simulated failure' END,
            g.created, g.created + CASE
                WHEN s.status IN ('started', 'processing') THEN 5
                WHEN s.status = 'failed' THEN 2 + 60 * g.d
                ELSE 15 + 600 * g.d ^ 3 END,
            %(now)s + 604800, 3,
            CASE WHEN s.status = 'completed_with_errors' THEN 1 + i %% 5 ELSE 0 END,
            '', %(tag)s, '{{}}'::jsonb, ''
        FROM (SELECT i, random() AS r, random() AS d,
                     %(now)s - 600 - %(span)s + i * (%(span)s::float8 / %(count)s) AS created
              FROM generate_series(1, %(count)s) AS i) AS g
        CROSS JOIN LATERAL (SELECT CASE
            WHEN g.i > %(count)s - 14 THEN 'processing'
            WHEN g.r < 0.015 THEN 'started'
            WHEN g.r < 0.03 THEN 'processing'
            WHEN g.r < 0.09 THEN 'failed'
            WHEN g.r < 0.19 THEN 'completed_with_errors'
            ELSE 'completed' END AS status) AS s
        """,
        {
            "ops": list(_stack.OPERATIONS),
            "now": now,
            "count": count,
            "tag": TAG,
            "span": HISTORY_SPAN,
        },
    )
    return time.perf_counter() - started


# -- the query, as the project runs it -------------------------------------------------


_CAPTURE = """
import json, os, sys
import django
django.setup()
from django.db import connection
from bench import _stack
from operations import overview

found = {}
for op in sys.argv[1:]:
    seen = []
    def wrapper(execute, sql, params, many, context):
        seen.append({"sql": sql, "params": list(params or [])})
        return execute(sql, params, many, context)
    with connection.execute_wrapper(wrapper):
        figures = overview.stats(op, hidden=frozenset())
    # The stats query itself (the page's other queries, such as the failure groups, aside).
    stats_sql = next(q for q in seen if "percentile_cont" in q["sql"])
    found[op] = {**stats_sql, "count": len(seen), "runs": figures["count"]}
token = _stack.api_token(_stack.connect(os.environ["DATABASE_URL"]))
print(json.dumps({"token": token, "queries": found}))
"""


def _capture(env: dict[str, str], operations: list[str]) -> dict[str, Any]:
    """The stats query's SQL and parameters as Django sends them, and an API token.

    In a child with Django set up (this process never sets it up), like
    ``bench/proxy.py``'s token.
    """
    done = subprocess.run(
        [sys.executable, "-c", _CAPTURE, *operations],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"could not capture the stats query: {done.stderr[-2000:]}")
    captured = json.loads(done.stdout.strip().splitlines()[-1])
    for op, query in captured["queries"].items():
        if query["count"] != 1:
            print(
                f"note: overview.stats({op!r}) ran {query['count']} queries; the SQL alone "
                "times the last one"
            )
    return captured


def _cursor(conn):
    """Client-side binding, as Django's psycopg backend sends queries (no prepare)."""
    import psycopg

    return psycopg.ClientCursor(conn)


def _sql_loop(conn, query: dict[str, Any], count: int) -> dict[str, Any]:
    sql, params = query["sql"], query["params"]
    cursor = _cursor(conn)
    for _ in range(min(50, count)):  # warm the connection and the buffers
        cursor.execute(sql, params)
        cursor.fetchone()
    times: list[float] = []
    runs = 0
    began = time.perf_counter()
    for _ in range(count):
        start = time.perf_counter()
        cursor.execute(sql, params)
        found, _median, _p95 = cursor.fetchone()
        times.append(time.perf_counter() - start)
        runs = len(found if isinstance(found, list) else json.loads(found))
    total = time.perf_counter() - began
    cursor.close()
    return {
        "queries": count,
        "runs": runs,
        "qps": round(count / total, 1) if total else None,
        "p50_ms": _stack.ms(percentile(times, 0.5)),
        "p99_ms": _stack.ms(percentile(times, 0.99)),
        "max_ms": _stack.ms(max(times) if times else None),
    }


def _explain(conn, query: dict[str, Any]) -> dict[str, Any]:
    cursor = _cursor(conn)
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query["sql"], query["params"])
    text = "\n".join(row[0] for row in cursor.fetchall())
    cursor.close()
    index = re.search(r"Index (?:Only )?Scan(?: Backward)? using (\w+) on " + _stack.TABLE, text)
    buffers = re.search(r"Buffers: shared hit=(\d+)(?: read=(\d+))?", text)
    execution = re.search(r"Execution Time: ([\d.]+) ms", text)
    removed = re.findall(r"Rows Removed by Filter: (\d+)", text)
    return {
        "text": text,
        "index": index.group(1) if index else None,
        "seq_scan": bool(re.search(r"Seq Scan on " + _stack.TABLE, text)),
        "shared_hit": int(buffers.group(1)) if buffers else None,
        "shared_read": int(buffers.group(2) or 0) if buffers else None,
        "rows_removed_by_filter": sum(int(n) for n in removed),
        "execution_ms": float(execution.group(1)) if execution else None,
    }


# -- the endpoint under gunicorn ---------------------------------------------------------


def _http(
    env: dict[str, str],
    token: str,
    operations: list[str],
    connections: list[int],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    auth = {"Authorization": f"Bearer {token}"}
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(GUNICORN_CONF),
        "--bind",
        f"{HOST}:{port}",
        "tasksite.wsgi:application",
    ]
    runs: list[dict[str, Any]] = []
    with _stack.running(
        command,
        env,
        health=f"http://{HOST}:{port}/healthz",
        log=ROOT / "var" / f"bench-stats-gunicorn-{port}.log",
    ):
        paths = {op: f"/operations/{op}/stats" for op in operations}
        answered = {op: _check(port, path, auth) for op, path in paths.items()}
        if not args.smoke:  # warm every worker and its database connection up
            _load.measure(
                HOST, port, list(paths.values()), auth, connections=max(connections), seconds=1
            )
        for op in operations:
            for count in connections:
                got = _load.measure(
                    HOST, port, [paths[op]], auth, connections=count, seconds=args.seconds
                )
                runs.append(
                    {
                        "operation": op,
                        "measure": "HTTP (gunicorn)",
                        "connections": count,
                        "per_s": got["rps"],
                        "p50_ms": got["p50_ms"],
                        "p99_ms": got["p99_ms"],
                        "errors": got["errors"],
                        "requests": got["requests"],
                        "runs": answered[op],
                    }
                )
    return runs


def _check(port: int, path: str, headers: dict[str, str]) -> int:
    """A 200 with the operation's runs first (a fast 404 is no figure); how many runs."""
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    if response.status != 200 or not body.get("runs"):
        raise RuntimeError(f"{path} answered {response.status} {str(body)[:120]}")
    return len(body["runs"])


# -- the verdict -------------------------------------------------------------------------


def _verdict(figures: dict[str, Any]) -> dict[str, Any]:
    http = figures["http"]
    worst_http = max((run["p99_ms"] or 0 for run in http), default=None)
    worst_sql = max((s["p99_ms"] or 0 for s in figures["sql"].values()), default=None)
    errors = sum(run["errors"] for run in http)
    plan = figures["plan"]
    targets = {
        "http_p99_ms": worst_http,
        "http_target_ms": TARGET_HTTP_P99_MS,
        "http_met": bool(http) and not errors and worst_http < TARGET_HTTP_P99_MS,
        "sql_p99_ms": worst_sql,
        "sql_target_ms": TARGET_SQL_P99_MS,
        "sql_met": worst_sql is not None and worst_sql < TARGET_SQL_P99_MS,
        "plan_index": plan["index"],
        "plan_seq_scan": plan["seq_scan"],
        "plan_met": plan["index"] == INDEX and not plan["seq_scan"],
        "http_errors": errors,
    }
    print(
        f"targets at {figures['rows']:,} rows: endpoint p99 {worst_http} ms (worst over "
        f"operations and connections{', ' + str(errors) + ' errors' if errors else ''}) < "
        f"{TARGET_HTTP_P99_MS:g} ms: {'met' if targets['http_met'] else 'MISSED'}; SQL alone p99 "
        f"{worst_sql} ms < {TARGET_SQL_P99_MS:g} ms: {'met' if targets['sql_met'] else 'MISSED'}; "
        f"plan: {'index scan on ' + plan['index'] if plan['index'] else 'no index scan'}"
        f"{', SEQUENTIAL SCAN' if plan['seq_scan'] else ''} "
        f"({plan['shared_hit']} buffers hit, {plan['shared_read']} read, "
        f"{plan['rows_removed_by_filter']} rows filtered out): "
        f"{'met' if targets['plan_met'] else 'MISSED'}"
    )
    return targets


def _ratio(ours: float | None, base: float | None) -> float | None:
    return round(ours / base, 1) if ours and base else None
