"""The benchmark's child processes: ``python -m bench._children <role>``, parameters on stdin.

Each child sets Django up on the environment it was given (``bench._stack.stack_env``)
and answers its parent with JSON lines on stdout; it prints nothing else there.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from typing import Any


def _say(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def rss_kib() -> dict[str, int]:
    """Resident memory now and at its peak (VmRSS, VmHWM), in KiB."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                found[key] = int(value.split()[0])
    return {"rss_kib": found.get("VmRSS", 0), "peak_kib": found.get("VmHWM", 0)}


def producer(params: dict[str, Any]) -> None:
    """Report changes on this producer's own tasks through ``tasks.tracker`` for a window.

    ``progress`` mode cycles over ``tasks`` tasks so that no task is reported
    within TASK_PROGRESS_MIN_INTERVAL of its last write (nothing is held by the
    coalescing); ``error`` mode sends status changes, which are never held.
    The parent counts what was stored (versions in the database) and published.
    """
    from tasks import tracker

    count, mode, tag = params["tasks"], params["mode"], params["tag"]
    handles = [
        tracker.create_task("daily_sales", total=10**9, launched_by=tag) for _ in range(count)
    ]
    _say({"ready": True})
    start_at, end_at = map(float, sys.stdin.readline().split())
    profile = None
    if params.get("profile"):
        import cProfile

        profile = cProfile.Profile()
    time.sleep(max(0.0, start_at - time.time()))
    calls = 0
    if profile:
        profile.enable()
    while time.time() < end_at:
        for _ in range(100):
            handle = handles[calls % count]
            calls += 1
            if mode == "error":
                handle.error(f"bench error {calls}")
            else:
                handle.progress(calls // count + 1, f"step {calls}")
    finished = time.time()
    if profile:
        profile.disable()
        import io
        import pstats

        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(25)
        sys.stderr.write(out.getvalue())
    _say({"calls": calls, "seconds": finished - start_at})


def reader(params: dict[str, Any]) -> None:
    """Fetch single live tasks through the project's selector until told to stop.

    Paced (``pause`` seconds between reads) so that it measures latency rather
    than competing for the two cores; every sample is (wall time, seconds).
    """
    from django.db import connection

    from tasks import selectors

    ids = params["ids"]
    pause = params.get("pause", 0.001)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    selectors.get_task(ids[0])  # connect before the first timed read
    _say({"ready": True})
    samples: list[tuple[float, float]] = []
    missing = 0
    while not stop.is_set():
        key = random.choice(ids)
        began = time.perf_counter()
        task = selectors.get_task(key)
        samples.append((time.time(), time.perf_counter() - began))
        if task is None:
            missing += 1
        time.sleep(pause)
    connection.close()
    _say({"samples": samples, "missing": missing})


def purge(params: dict[str, Any]) -> None:
    """Run the purge exactly as a Celery worker runs beat's ``operations.purge``."""
    import gc

    from operations.celery_tasks import purge as purge_task

    gc.collect()
    before = rss_kib()
    _say({"ready": True, **before})
    sys.stdin.readline()
    started = time.time()
    result = purge_task.apply()
    finished = time.time()
    removed = result.get()
    gc.collect()
    _say(
        {
            "removed": removed,
            "started": started,
            "finished": finished,
            "rss_before_kib": before["rss_kib"],
            **{f"after_{k}": v for k, v in rss_kib().items()},
        }
    )


ROLES = {"producer": producer, "reader": reader, "purge": purge}


def main() -> None:
    role, params = sys.argv[1], json.loads(sys.stdin.readline() or "{}")
    import django

    django.setup()
    ROLES[role](params)


if __name__ == "__main__":
    main()
