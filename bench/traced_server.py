"""Daphne under a tracer, for ``bench.anatomy``: a heap snapshot or a profile on a signal.

``BENCH_TRACE=heap``: tracemalloc runs from the start (``BENCH_TRACE_FRAMES``
frames a trace, default 12) and each ``SIGUSR1`` writes a snapshot.
``BENCH_TRACE=profile``: the first ``SIGUSR1`` starts cProfile, the next one
stops it and writes its stats. Files go to ``BENCH_TRACE_DIR`` as ``<n>.snap``
or ``<n>.prof``, written under another name and renamed, so a reader that sees
the name sees the whole file. The rest of the command line is daphne's.
"""

from __future__ import annotations

import cProfile
import gc
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from typing import Any

from daphne.cli import CommandLineInterface


class Tracer:
    """What a ``SIGUSR1`` does, by ``BENCH_TRACE``."""

    def __init__(self, mode: str, out: Path) -> None:
        self.mode = mode
        self.out = out
        self.count = 0
        self.profile: cProfile.Profile | None = None
        if mode == "heap":
            tracemalloc.start(int(os.environ.get("BENCH_TRACE_FRAMES", "12")))

    def _write(self, suffix: str, write: Any) -> None:
        self.count += 1
        partial = self.out / f"{self.count}.{suffix}.partial"
        write(str(partial))
        partial.rename(self.out / f"{self.count}.{suffix}")

    def signalled(self, signum: int, frame: Any) -> None:
        if self.mode == "heap":
            gc.collect()
            self._write("snap", tracemalloc.take_snapshot().dump)
        elif self.profile is None:
            self.profile = cProfile.Profile()
            self.profile.enable()
        else:
            self.profile.disable()
            self._write("prof", self.profile.dump_stats)
            self.profile = None


def main() -> None:
    tracer = Tracer(os.environ.get("BENCH_TRACE", "heap"), Path(os.environ["BENCH_TRACE_DIR"]))
    signal.signal(signal.SIGUSR1, tracer.signalled)
    sys.argv = ["daphne", *sys.argv[1:]]
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
