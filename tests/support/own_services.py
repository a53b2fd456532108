"""What an outage test drives: its own PostgreSQL and Redis, stopped and started again
under running services, a source that holds a job mid-step, a reporting process, and a
WebSocket client that lives through it all.

The servers are ``scripts/test_services.py``'s throwaway ones (never a developer's):
``stop`` is what an operator's stop does (PostgreSQL's fast shutdown, Redis' SIGTERM),
and ``start`` brings the same server back on the same data directory and port, so the
services find it again at the address they were given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import websockets
from websockets.exceptions import ConnectionClosed

from scripts import test_services
from tests.support.servers import ROOT
from tests.support.source_server import SourceServer

# How long a held source request waits at most: a test that fails never leaves it hung.
HOLD_TIMEOUT = 120.0

TERMINAL = ("completed", "completed_with_errors", "failed")


# -- servers ------------------------------------------------------------------------


@dataclass
class OwnServer:
    """One throwaway server that can be stopped and started again, same data, same port.

    Its processes live in ``services.processes``, so ``running_services`` stops the
    latest one (and removes the data) however the test ends.
    """

    name: str
    services: test_services.Services
    index: int
    home: Path
    log_path: Path
    stop_signal: int
    death_signal: int
    ready: Callable[[], bool]
    as_user: dict[str, Any]
    env: dict[str, str] | None

    @property
    def proc(self) -> subprocess.Popen:
        return self.services.processes[self.index]

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        test_services.stop(self.proc, self.stop_signal)

    def start(self) -> None:
        """The same command line again (a no-op while it runs); returns once it answers."""
        if self.running:
            return
        with open(self.log_path, "ab") as log_file:
            proc = subprocess.Popen(
                self.proc.args,
                cwd=self.home,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=test_services._die_with_parent(self.death_signal),
                **self.as_user,
            )
        self.services.processes.append(proc)
        self.index = len(self.services.processes) - 1
        test_services._wait(proc, self.ready, self.name, self.log_path)


@dataclass
class OwnServers:
    database_url: str
    redis_url: str
    postgres: OwnServer
    redis: OwnServer

    def start_stopped(self) -> None:
        for server in (self.postgres, self.redis):
            server.start()


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


@contextlib.contextmanager
def own_servers() -> Iterator[OwnServers]:
    """A throwaway PostgreSQL (with the ``tasks`` database) and Redis of this test's own.

    Missing binaries raise ``ServiceError``: a test that needs them fails, never skips.
    """
    with test_services.running_services(mode="own") as services:
        assert services.tmpdir is not None
        pg_port, redis_port = _port(services.database_url), _port(services.redis_url)
        bindir = test_services.postgres_bin()
        assert bindir is not None  # start_postgres found it
        pg_isready = [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(pg_port)]
        user = test_services._unprivileged_user()
        as_user: dict[str, Any] = (
            {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
        )
        pg_env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        pg_env.pop("PGDATA", None)
        names = [Path(str(p.args[0])).name for p in services.processes]
        postgres = OwnServer(
            name="PostgreSQL",
            services=services,
            index=names.index("postgres"),
            home=services.tmpdir / "postgres",
            log_path=services.tmpdir / "postgres" / "postgres.log",
            stop_signal=signal.SIGINT,  # the fast shutdown: sessions are ended, as pg_ctl -m fast
            death_signal=signal.SIGQUIT,
            ready=lambda: subprocess.run(pg_isready).returncode == 0,
            as_user=as_user,
            env=pg_env,
        )
        redis_server = OwnServer(
            name="Redis",
            services=services,
            index=names.index("redis-server"),
            home=services.tmpdir / "redis",
            log_path=services.tmpdir / "redis" / "redis.log",
            stop_signal=signal.SIGTERM,
            death_signal=signal.SIGTERM,
            ready=lambda: test_services._redis_pong(redis_port),
            as_user={},
            env=None,
        )
        yield OwnServers(services.database_url, services.redis_url, postgres, redis_server)


# -- HTTP ---------------------------------------------------------------------------------


class Answer(NamedTuple):
    status: int
    headers: Message
    body: Any


def call(
    base: str, method: str, path: str, token: str, body: dict | None = None, timeout: float = 60
) -> Answer:
    """One REST request; the body parsed as JSON (the raw text when it is not JSON)."""
    request = urllib.request.Request(
        f"{base}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, exc.headers, exc.read()
    try:
        parsed = json.loads(raw or b"null")
    except ValueError:
        parsed = raw.decode(errors="replace")
    return Answer(status, headers, parsed)


# -- a source that holds a job mid-step ------------------------------------------------------


class HeldSource(SourceServer):
    """The sample source API, able to hold the requests whose path names a part.

    A job held so is stuck in one step for exactly as long as the test wants: its
    database can go away while it waits, and its next write meets the outage.
    """

    def __init__(self) -> None:
        super().__init__()
        self._part: str | None = None
        self._released = threading.Event()
        self._released.set()
        self.holding = threading.Event()

    def hold(self, part: str) -> None:
        self.holding.clear()
        self._released.clear()
        self._part = part

    def release(self) -> None:
        self._part = None
        self._released.set()

    def take_fault(self, path: str) -> str | None:
        part = self._part
        if part is not None and part in path:
            self.holding.set()
            self._released.wait(HOLD_TIMEOUT)
        return super().take_fault(path)


@contextlib.contextmanager
def held_source() -> Iterator[HeldSource]:
    server = HeldSource()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release()
        server.shutdown()
        server.server_close()
        thread.join(10)


# -- a reporting process ----------------------------------------------------------------------


class Reporter:
    """``tests/support/reporter.py`` in a process of its own, its log readable meanwhile."""

    def __init__(self, steps: list[Any], env: dict[str, str], folder: Path, name: str) -> None:
        self.out_path = folder / f"{name}.out"
        self.log_path = folder / f"{name}.log"
        with open(self.out_path, "wb") as out, open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "tests" / "support" / "reporter.py"),
                    json.dumps(steps),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def result(self, timeout: float) -> dict:
        """What it printed at the end; it must have exited 0."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the reporter still runs after {timeout:g}s:\n{self.log()}")
        assert code == 0, f"the reporter exited {code}:\n{self.log()[-3000:]}"
        return json.loads(self.out_path.read_text().strip().splitlines()[-1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def reporting(steps: list[Any], env: dict[str, str], folder: Path, name: str) -> Iterator[Reporter]:
    reporter = Reporter(steps, env, folder, name)
    try:
        yield reporter
    finally:
        reporter.stop()


# -- a WebSocket client that lives through outages ----------------------------------------


class LiveClient:
    """A client subscribed to everything, on a thread of its own, as taskstatus.js behaves.

    It keeps every frame it receives; after a close it reconnects with backoff and asks
    for catch-up since the newest ``updated_at`` it saw, so it ends up with every final
    state whether its connection survived or not. ``closes`` records each close code
    (None: no close frame), ``failures`` each connection attempt that failed outright.
    """

    def __init__(self, ws_url: str, token: str) -> None:
        self.url = f"{ws_url}?access_token={token}"
        self.frames: list[dict] = []
        self.closes: list[int | None] = []
        self.failures: list[str] = []
        self.connections = 0
        self._since = int(time.time()) - 1
        self._changed = threading.Condition()
        self._ws: Any = None
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name="live-client", daemon=True)

    def __enter__(self) -> LiveClient:
        self._thread.start()
        try:
            self.wait_for(lambda frames: any(f["type"] == "subscribed" for f in frames), 30)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + 10
        while self._task is None and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._task is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may close meanwhile
                self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(15)

    def _run(self) -> None:
        self._task = self._loop.create_task(self._connect_forever())
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        self._loop.close()

    async def _connect_forever(self) -> None:
        backoff = 0.5
        while True:
            url = self.url if not self.connections else f"{self.url}&since={self._since}"
            try:
                async with websockets.connect(url, open_timeout=20, close_timeout=5) as ws:
                    with self._changed:
                        self.connections += 1
                    self._ws = ws
                    try:
                        async for raw in ws:
                            self._received(json.loads(raw))
                    except ConnectionClosed:
                        pass
                    finally:
                        self._ws = None
                    self._closed(ws.close_code)
                    backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, timed out, a 5xx handshake: try again
                with self._changed:
                    self.failures.append(repr(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 4.0)

    def _received(self, frame: dict) -> None:
        with self._changed:
            self.frames.append(frame)
            if frame.get("type") == "task_status":
                self._since = max(self._since, frame["payload"]["updated_at"])
            self._changed.notify_all()

    def _closed(self, code: int | None) -> None:
        with self._changed:
            self.closes.append(code)
            self._changed.notify_all()

    def _poll(self, predicate: Callable[[list[dict]], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (value := predicate(self.frames)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)
            return value

    def wait_for(self, predicate: Callable[[list[dict]], Any], timeout: float) -> Any:
        """The first true value of ``predicate(frames)`` within ``timeout``."""
        value = self._poll(predicate, timeout)
        if not value:
            raise AssertionError(
                f"no such frame within {timeout:g}s; closes {self.closes}, "
                f"failures {self.failures[-3:]}, last frames {self.frames[-5:]}"
            )
        return value

    def final_state(self, task_id: str, timeout: float) -> dict:
        """The task's newest document, once a terminal one has arrived."""

        def terminal(frames: list[dict]) -> dict | None:
            payloads = [
                f["payload"]
                for f in frames
                if f.get("type") == "task_status" and f["payload"]["task_id"] == task_id
            ]
            newest = max(payloads, key=lambda p: p["version"], default=None)
            return newest if newest and newest["status"] in TERMINAL else None

        return self.wait_for(terminal, timeout)

    def send(self, frame: dict, timeout: float = 10) -> int:
        """Send a frame on the current connection; returns how many frames came before it."""
        ws = self._ws
        assert ws is not None, f"not connected; closes {self.closes}"
        with self._changed:
            before = len(self.frames)
        asyncio.run_coroutine_threadsafe(ws.send(json.dumps(frame)), self._loop).result(timeout)
        return before

    def ping(self, timeout: float) -> None:
        """A ping answered on the current connection, whichever it is."""

        def pongs(frames: list[dict]) -> int:
            return sum(1 for f in frames if f.get("type") == "pong")

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._changed:
                before = pongs(self.frames)
            ws = self._ws
            if ws is not None:
                sent = asyncio.run_coroutine_threadsafe(ws.send('{"action": "ping"}'), self._loop)
                with contextlib.suppress(Exception):  # closed meanwhile: the next one
                    sent.result(5)
                    left = max(0.1, min(5.0, deadline - time.monotonic()))
                    if self._poll(lambda frames, before=before: pongs(frames) > before, left):
                        return
            time.sleep(0.2)
        raise AssertionError(f"no pong within {timeout:g}s; closes {self.closes}")


async def _close_code_of_handshake(url: str, timeout: float) -> int | None:
    async with websockets.connect(url, open_timeout=timeout) as ws:
        try:
            while True:  # "subscribed" would mean the handshake got through
                frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                if frame.get("type") == "subscribed":
                    return None
        except ConnectionClosed as exc:
            # No close frame at all is not "subscribed": it is 1006, an abnormal closure.
            return exc.rcvd.code if exc.rcvd else ABNORMAL_CLOSURE


ABNORMAL_CLOSURE = 1006


def handshake_close_code(ws_url: str, token: str, timeout: float = 30) -> int | None:
    """How a new connection ends: its close code (1006 when dropped without a close
    frame), or None when it was subscribed."""
    return asyncio.run(_close_code_of_handshake(f"{ws_url}?access_token={token}", timeout))
