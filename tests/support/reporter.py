"""A job stand-in in its own process: reports the steps given as JSON through the tracker.

Steps: ["start", operation, total] (a bare handle), ["begin", operation, total] (the
handle of ``tracker.start_task``, heartbeat included), ["progress", current, message],
["error", message], ["complete", result], ["fail", message], ["sleep", seconds],
["wait_for_file", path], ["flood", count, message_size].
Prints {"task_id": ..., "status": ...} at the end.
"""

import contextlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tasksite.settings")

import django  # noqa: E402

django.setup()

from tasks import tracker  # noqa: E402


def main() -> None:
    steps = json.loads(sys.argv[1])
    handle = None
    opened = contextlib.ExitStack()
    for step in steps:
        kind, *args = step
        if kind == "start":
            handle = tracker.create_task(args[0], total=args[1] if len(args) > 1 else None)
        elif kind == "begin":
            handle = opened.enter_context(
                tracker.start_task(args[0], total=args[1] if len(args) > 1 else None)
            )
        elif kind == "progress":
            handle.progress(args[0], args[1] if len(args) > 1 else "")
        elif kind == "error":
            handle.error(args[0])
        elif kind == "complete":
            handle.complete(args[0] if args else None)
        elif kind == "fail":
            handle.fail(args[0])
        elif kind == "flood":
            count, size = args
            for i in range(1, count + 1):
                handle.progress(i, "x" * size)
        elif kind == "sleep":
            time.sleep(args[0])
        elif kind == "wait_for_file":
            while not Path(args[0]).exists():
                time.sleep(0.02)
    opened.close()
    if handle is not None:
        handle._finish_on_exit()
    print(
        json.dumps(
            {
                "task_id": handle.task_id if handle else None,
                "status": handle.status if handle else None,
            }
        )
    )


if __name__ == "__main__":
    main()
