"""The producer process of the fan-out benchmark: jobs reporting through ``tasks.tracker``.

It reports exactly as a job does (one compare-and-swap write and one PUBLISH
per change), at a fixed rate or as fast as it can, and writes down the time of
every tracker call with the version and status it produced: the ground truth
that the clients' latency, freshness and loss are checked against.

Run with ``TASK_PROGRESS_MIN_INTERVAL=0`` so that the tracker's own coalescing
does not hide the load from the hub: every call is a change that is published.

Driven by JSON lines on stdin: ``migrate``, ``token``, ``lifecycles``, ``create``,
``random``, ``quit``; answers one JSON line each.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tasksite.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402

from tasks import tracker  # noqa: E402
from tasks.auth.bearer import issue_local_token  # noqa: E402

OPERATION = "daily_sales"


def count_statement(
    counts: Counter[str], execute: Any, sql: str, params: Any, many: bool, context: Any
) -> Any:
    """Count the tracker's SQL statements by their first word (INSERT, UPDATE, SELECT…)."""
    counts[sql.lstrip().split(None, 1)[0].upper()] += 1
    return execute(sql, params, many, context)


def token() -> str:
    user, _ = get_user_model().objects.get_or_create(username="bench-fanout")
    return issue_local_token(user, name="fan-out benchmark")


class Pacer:
    """Calls spaced 1/rate apart from a fixed start (no drift); rate 0 is flat out."""

    def __init__(self, rate: float, seconds: float) -> None:
        self.rate = rate
        self.start = time.time()
        self.deadline = self.start + seconds
        self.sent = 0

    def next(self) -> float | None:
        if self.rate:
            due = self.start + self.sent / self.rate
            if due >= self.deadline:
                return None
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
        now = time.time()
        if now >= self.deadline:
            return None
        self.sent += 1
        return now


def lifecycles(rate: float, seconds: float, slots: int, steps: int) -> list[list[Any]]:
    """Whole task lives, ``slots`` at a time, round robin: start, progress, one error, end.

    Every live has five status transitions (started, processing, error,
    processing, completed_with_errors) among ``steps`` changes; the rest are
    plain progress steps that a slow client may get conflated.
    """
    changes: list[list[Any]] = []
    live: list[list[Any]] = [[None, 0, 0] for _ in range(slots)]  # handle, step, version
    pacer = Pacer(rate, seconds)
    index = 0
    while True:
        t_call = pacer.next()
        if t_call is None:
            break
        slot = live[index % slots]
        index += 1
        handle, step, version = slot
        if handle is None:
            handle = tracker.create_task(OPERATION, total=steps)
            step = version = 0
        elif step == steps - 1:
            handle.complete({"steps": steps})
        elif step == steps // 2:
            handle.error(f"step {step} failed")
        else:
            handle.progress(step, f"step {step}")
        version += 1
        changes.append([handle.task_id, version, handle.status, t_call])
        step += 1
        slot[:] = [None if handle.is_terminal else handle, step, version]
    return changes


_created: list[list[Any]] = []


def create(count: int) -> list[str]:
    """Tasks for the filtered run: each client watches one of them."""
    _created.clear()
    for _ in range(count):
        handle = tracker.create_task(OPERATION, total=10**9)
        _created.append([handle, 1, 0])
    return [handle.task_id for handle, _, _ in _created]


def random_updates(rate: float, seconds: float) -> list[list[Any]]:
    """Progress on tasks chosen at random among ``create``'s."""
    changes: list[list[Any]] = []
    pacer = Pacer(rate, seconds)
    while True:
        t_call = pacer.next()
        if t_call is None:
            break
        entry = random.choice(_created)
        handle, version, step = entry
        step += 1
        handle.progress(step, f"step {step}")
        version += 1
        entry[1], entry[2] = version, step
        changes.append([handle.task_id, version, handle.status, t_call])
    return changes


def main() -> None:
    for line in sys.stdin:
        command = json.loads(line)
        cmd = command["cmd"]
        started = time.time()
        answer: dict[str, Any] = {"event": cmd}
        if cmd == "migrate":
            from django.core.management import call_command

            call_command("migrate", interactive=False, verbosity=0)
        elif cmd == "token":
            answer["token"] = token()
        elif cmd in ("lifecycles", "random"):
            statements: Counter[str] = Counter()
            with connection.execute_wrapper(partial(count_statement, statements)):
                if cmd == "lifecycles":
                    changes = lifecycles(
                        command["rate"], command["seconds"], command["slots"], command["steps"]
                    )
                else:
                    changes = random_updates(command["rate"], command["seconds"])
            answer["statements"] = dict(statements)
            elapsed = time.time() - started
            Path(command["out"]).write_text(json.dumps({"changes": changes}))
            answer.update(
                changes=len(changes),
                first_call=changes[0][3] if changes else started,
                last_call=changes[-1][3] if changes else started,
                rate=len(changes) / elapsed if elapsed else 0.0,
                tasks=len({c[0] for c in changes}),
            )
        elif cmd == "create":
            ids = create(command["count"])
            Path(command["out"]).write_text("\n".join(ids) + "\n")
            answer["tasks"] = len(ids)
        elif cmd == "quit":
            break
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
