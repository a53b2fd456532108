"""Two small network helpers for everything that starts servers on this machine:
``make stack`` (deploy/stack.py), the benchmarks and the tests. Standard library only."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Until ``url`` answers 200; a RuntimeError when ``proc`` exits first or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"server at {url} did not come up in {timeout:.0f} s")
        time.sleep(0.1)
