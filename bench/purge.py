"""Purge: a million expired rows deleted by the project's own purge while a reader reads.

Three runs, each on a million expired rows loaded afresh beside the same live
rows (one ``INSERT ... SELECT generate_series``, VACUUM ANALYZE, CHECKPOINT):
the project's purge as a Celery worker runs beat's ``operations.purge`` (in a
process of its own, whose memory is read before and after), then the
baselines, one plain SQL ``DELETE`` and plain-SQL batches of 10,000 (the
statement the purge used before). One reader process keeps fetching single
live tasks through ``tasks.selectors.get_task`` the whole time; its p99 during
each delete is set against its p99 in the seconds before.

Targets: purge under 5 s, reader p99 during at most 2x before, memory flat.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

from bench import _stack
from bench.common import busy, header, percentile, record, table

BATCH = 10_000
METHODS = ("project purge (Celery task)", "plain DELETE", "plain SQL batches of 10,000")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _stack.add_stack_arguments(parser)
    parser.add_argument("--rows", type=int, default=1_000_000, help="expired rows to purge")
    parser.add_argument("--live", type=int, default=20_000, help="live rows the reader reads")
    parser.add_argument("--before", type=float, default=3.0, help="reader seconds before")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        args.rows, args.live, args.before = min(args.rows, 20_000), min(args.live, 500), 0.3
    header("purge")
    print(f"before: {busy()}")
    _stack.prepare_database(args.database_url, args.redis_url)
    env = _stack.stack_env(args.database_url, args.redis_url)
    rows: list[dict[str, Any]] = []
    with _stack.connect(args.database_url) as conn:
        _stack.reset_table(conn)
        _stack.load_tasks(conn, args.live, tag="bench-live")
        ids = [str(row[0]) for row in conn.execute(f"SELECT task_id FROM {_stack.TABLE}")]
        random.shuffle(ids)
        reader = _Reader(env, ids[:5000])
        try:
            for method in METHODS:
                load = _stack.load_tasks(conn, args.rows, expired=True, tag="bench-expired")
                _stack.settle(conn)
                if method.startswith("project"):
                    result = reader.around(args.before, lambda: _project_purge(env))
                else:
                    batched = "batches" in method
                    result = reader.around(
                        args.before, lambda b=batched: _plain_delete(conn, batched=b)
                    )
                left = conn.execute(
                    f"SELECT count(*) FROM {_stack.TABLE} WHERE expires_at <= %s", [time.time()]
                ).fetchone()[0]
                rows.append(
                    {"method": method, "load_s": round(load, 1), **result, "expired_left": left}
                )
        finally:
            samples = reader.stop()
    for row in rows:
        row.update(_reads(samples, *row.pop("window")))
    columns = [
        "method",
        "removed",
        "seconds",
        "rows_per_s",
        "p99_before_ms",
        "p99_during_ms",
        "p99_ratio",
        "reads_during",
        "rss_before_mib",
        "rss_after_mib",
        "peak_mib",
        "expired_left",
    ]
    print(
        f"{args.rows:,} expired rows + {args.live:,} live on PostgreSQL; "
        f"reader fetches single live tasks through tasks.selectors.get_task"
    )
    print(table(rows, columns))
    project = rows[0]
    grown = project["rss_after_mib"] - project["rss_before_mib"]
    figures = {
        "rows": args.rows,
        "live": args.live,
        "runs": rows,
        "targets": {
            "purge_under_5s": project["seconds"] < 5,
            "reader_p99_at_most_2x": (project["p99_ratio"] or 99) <= 2,
            "memory_flat_within_10mib": abs(grown) < 10,
        },
    }
    print(
        "targets: "
        + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in figures["targets"].items())
    )
    if not args.no_record:
        record("purge", figures, smoke=args.smoke)
    return figures


def _project_purge(env: dict[str, str]) -> dict[str, Any]:
    proc = _stack.child("purge", env)
    try:
        _stack.read_json_line(proc)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        done = _stack.read_json_line(proc)
    finally:
        _stack.stop_group(proc)
    return {
        "removed": done["removed"],
        "started": done["started"],
        "finished": done["finished"],
        "rss_before_mib": round(done["rss_before_kib"] / 1024, 1),
        "rss_after_mib": round(done["after_rss_kib"] / 1024, 1),
        "peak_mib": round(done["after_peak_kib"] / 1024, 1),
    }


def _plain_delete(conn, *, batched: bool) -> dict[str, Any]:
    cutoff = time.time()
    started = time.time()
    if batched:
        removed = 0
        while True:
            count = conn.execute(
                f"DELETE FROM {_stack.TABLE} WHERE task_id IN (SELECT task_id FROM "
                f"{_stack.TABLE} WHERE expires_at <= %s LIMIT %s)",
                [cutoff, BATCH],
            ).rowcount
            removed += count
            if count < BATCH:
                break
    else:
        removed = conn.execute(
            f"DELETE FROM {_stack.TABLE} WHERE expires_at <= %s", [cutoff]
        ).rowcount
    return {"removed": removed, "started": started, "finished": time.time()}


class _Reader:
    """One reader process for the whole part; its samples are split at each delete."""

    def __init__(self, env: dict[str, str], ids: list[str]) -> None:
        self.proc = _stack.child("reader", env, ids=ids)
        _stack.read_json_line(self.proc)

    def around(self, before: float, delete: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``delete`` after ``before`` seconds of reads; note its window."""
        time.sleep(before)
        result = delete()
        time.sleep(0.3)
        started, finished = result.pop("started"), result.pop("finished")
        seconds = finished - started
        return {
            **result,
            "seconds": round(seconds, 2),
            "rows_per_s": round(result["removed"] / seconds) if seconds else None,
            "window": (started - before, started, finished),
        }

    def stop(self) -> list[tuple[float, float]]:
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
            return _stack.read_json_line(self.proc)["samples"]
        finally:
            _stack.stop_group(self.proc)


def _reads(
    samples: list[tuple[float, float]], since: float, started: float, finished: float
) -> dict[str, Any]:
    """The reader's latency in the seconds before a delete against during it."""
    pre = [lat for at, lat in samples if since <= at < started]
    during = [lat for at, lat in samples if started <= at <= finished]
    p99_before = percentile(pre, 0.99)
    p99_during = percentile(during, 0.99)
    return {
        "p50_before_ms": _stack.ms(percentile(pre, 0.5)),
        "p99_before_ms": _stack.ms(p99_before),
        "p50_during_ms": _stack.ms(percentile(during, 0.5)),
        "p99_during_ms": _stack.ms(p99_during),
        "max_during_ms": _stack.ms(max(during) if during else None),
        "p99_ratio": round(p99_during / p99_before, 2) if p99_before and p99_during else None,
        "reads_before": len(pre),
        "reads_during": len(during),
    }
