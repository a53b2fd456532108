"""Ingest: status changes a second that K producer processes store and broadcast.

Each producer reports on tasks of its own through ``tasks.tracker`` on
PostgreSQL and Redis, for a fixed window. Coalescing cannot flatter the figure:
what counts is what was stored (``version`` increments in the database, beyond
creation) and what was published (PUBLISHes a subscriber on the bench's own
channel heard), not the calls made. ``progress`` spreads the changes over
enough tasks that none is reported within TASK_PROGRESS_MIN_INTERVAL of its
last write; ``error`` sends status changes, which are never held. The
``progress-async`` rows run the same producers with ``synchronous_commit=off``
(through libpq's PGOPTIONS, nothing in the project changed): the difference is
what waiting for the WAL flush of every single-statement commit costs.

Target: at least 2,000 changes a second from one producer.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any

from bench import _stack
from bench.common import busy, header, record, table

TARGET_ONE_PRODUCER = 2000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _stack.add_stack_arguments(parser)
    parser.add_argument("--producers", default="1,2,4", help="K values, comma-separated")
    parser.add_argument("--seconds", type=float, default=6.0, help="window per run")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per producer")
    parser.add_argument("--modes", default="progress,error,progress-async")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the first producer (to stderr); figures then lower",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        args.producers, args.seconds, args.tasks, args.modes = "1", 1.0, 200, "progress"
    header("ingest")
    print(f"before: {busy()}")
    _stack.prepare_database(args.database_url, args.redis_url)
    rows = []
    with _stack.connect(args.database_url) as conn:
        _stack.reset_table(conn)
        for mode in args.modes.split(","):
            for k in (int(value) for value in args.producers.split(",")):
                rows.append(_one_run(conn, args, mode, k))
    print(
        f"PostgreSQL + Redis, {args.seconds:g} s a run, {args.tasks:,} tasks per producer; "
        "stored = version increments in the database, published = PUBLISHes heard"
    )
    print(
        table(
            rows,
            [
                "mode",
                "producers",
                "calls",
                "stored",
                "published",
                "stored_per_s",
                "per_producer_per_s",
                "held",
            ],
        )
    )
    one = [row for row in rows if row["producers"] == 1 and not row["mode"].endswith("-async")]
    best_one = max((row["stored_per_s"] for row in one), default=0)
    figures = {
        "runs": rows,
        "target_one_producer": TARGET_ONE_PRODUCER,
        "one_producer_stored_per_s": best_one,
        "target_met": all(row["stored_per_s"] >= TARGET_ONE_PRODUCER for row in one),
    }
    print(
        f"target >= {TARGET_ONE_PRODUCER:,}/s from one producer: "
        + ("met" if figures["target_met"] else "MISSED")
        + " ("
        + ", ".join(f"{row['mode']} {row['stored_per_s']:,}/s" for row in one)
        + ")"
    )
    if not args.no_record:
        record("ingest", figures, smoke=args.smoke)
    return figures


def _one_run(conn, args: argparse.Namespace, mode: str, k: int) -> dict[str, Any]:
    env = _stack.stack_env(args.database_url, args.redis_url)
    if mode.endswith("-async"):
        env["PGOPTIONS"] = "-c synchronous_commit=off"
    channel = env["TASK_UPDATES_CHANNEL"]
    tag = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    heard = _Subscriber(args.redis_url, channel)
    procs = [
        _stack.child(
            "producer",
            env,
            tasks=args.tasks,
            mode=mode.removesuffix("-async"),
            tag=tag,
            profile=args.profile and i == 0,
        )
        for i in range(k)
    ]
    try:
        for proc in procs:
            _stack.read_json_line(proc)
        start_at = time.time() + 0.3
        end_at = start_at + args.seconds
        for proc in procs:
            proc.stdin.write(f"{start_at} {end_at}\n")
            proc.stdin.flush()
        answers = [_stack.read_json_line(proc) for proc in procs]
    finally:
        for proc in procs:
            _stack.stop_group(proc)
    time.sleep(0.3)
    published = heard.stop()
    stored = conn.execute(
        f"SELECT COALESCE(sum(version - 1), 0) FROM {_stack.TABLE} WHERE launched_by = %s", [tag]
    ).fetchone()[0]
    calls = sum(answer["calls"] for answer in answers)
    seconds = max(answer["seconds"] for answer in answers)
    return {
        "mode": mode,
        "producers": k,
        "calls": calls,
        "stored": int(stored),
        "published": published,
        "stored_per_s": round(int(stored) / seconds),
        "per_producer_per_s": round(int(stored) / seconds / k),
        "held": calls - int(stored),
        "seconds": round(seconds, 2),
    }


class _Subscriber:
    """Counts the changes published on the bench's channel (creations excluded)."""

    def __init__(self, redis_url: str, channel: str) -> None:
        import redis

        self.count = 0
        self._stop = threading.Event()
        self._pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel)
        self._pubsub.get_message(timeout=1)  # the confirmation: subscribed from here on
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                version = message["data"].split(b"\n", 1)[0].split(b" ")[2]
                if version != b"1":
                    self.count += 1

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()
        return self.count
