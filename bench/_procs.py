"""Child processes of the benchmarks, seen from outside: stop one, its CPU and memory.

From ``/proc``: utime + stime, and the resident set (sampled in a thread
during a phase).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM this one process, then SIGKILL it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


class RssSampler(threading.Thread):
    """Resident memory of the server every 0.2 s during a phase."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[int] = [rss_bytes(pid)]
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.2):
            with contextlib.suppress(OSError):
                self.samples.append(rss_bytes(self.pid))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        with contextlib.suppress(OSError):
            self.samples.append(rss_bytes(self.pid))
