"""A client process of the fan-out benchmark: many WebSocket connections, one loop.

Driven by its parent through JSON lines on stdin/stdout. The client is a bare
asyncio protocol (no websockets library) so that the machine's second core,
which clients, server and producer share, is spent on the server under test
rather than on the clients; frames are parsed once per process (every
connection receives the same bytes) and each connection keeps only what the
loss and freshness checks need.

Commands: ``{"cmd": "reset"}``, ``{"cmd": "stats"}``, ``{"cmd": "report",
"truth": path}`` and ``{"cmd": "quit"}``; the process connects at start.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import json
import os
import random
import resource
import sys
import time
from typing import Any
from urllib.parse import urlsplit

_SAMPLES_RETURNED = 40_000


def raise_open_files() -> None:
    """5,000 sockets need more than the usual soft limit of open files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Pool:
    """What the connections of this process share: the parsed-frame cache and totals."""

    def __init__(self) -> None:
        self.parsed: dict[bytes, tuple[str, int, str] | None] = {}
        self.count = 0
        self.last_recv = 0.0
        self.closed: dict[int, int] = {}

    def parse(self, payload: bytes) -> tuple[str, int, str] | None:
        info = self.parsed.get(payload, False)
        if info is False:
            info = None
            try:
                message = json.loads(payload)
                if message.get("type") == "task_status":
                    doc = message["payload"]
                    info = (sys.intern(doc["task_id"]), doc["version"], doc["status"])
            except (ValueError, KeyError, TypeError):
                info = None
            if len(self.parsed) > 100_000:
                self.parsed.clear()
            self.parsed[payload] = info
        return info


class Connection(asyncio.Protocol):
    """One WebSocket client: handshake, unmasked server frames, pong, close."""

    def __init__(self, pool: Pool, host: str, path: str, task_id: str | None, sampled: bool):
        self.pool = pool
        self.host = host
        self.path = path
        self.task_id = task_id
        self.sampled = sampled
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.reset()

    def reset(self) -> None:
        # task_id -> [last version, last status, [versions where the status changed], count]
        self.tasks: dict[str, list] = {}
        self.count = 0
        self.out_of_order = 0
        # sampled connections: task_id -> ([versions], [receive times]) in arrival order
        self.arrivals: dict[str, tuple[list[int], list[float]]] = {}

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        transport.write(request.encode())  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during handshake: {exc}"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status_line = bytes(buffer[: buffer.find(b"\r\n")])
            del buffer[: end + 4]
            if b" 101 " not in status_line:
                self.ready.set_exception(ConnectionError(status_line.decode(errors="replace")))
                self.transport.close()
                return
            self.upgraded = True
            self.ready.set_result(None)
        offset = 0
        size = len(buffer)
        while size - offset >= 2:
            length = buffer[offset + 1] & 0x7F
            head = 2
            if length == 126:
                if size - offset < 4:
                    break
                length = int.from_bytes(buffer[offset + 2 : offset + 4], "big")
                head = 4
            elif length == 127:
                if size - offset < 10:
                    break
                length = int.from_bytes(buffer[offset + 2 : offset + 10], "big")
                head = 10
            if size - offset < head + length:
                break
            opcode = buffer[offset] & 0x0F
            payload = bytes(buffer[offset + head : offset + head + length])
            offset += head + length
            if opcode == 1:
                self._text(payload)
            elif opcode == 9:
                self._send(0xA, payload)
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.pool.closed[code] = self.pool.closed.get(code, 0) + 1
                self._send(0x8, payload[:2])
                self.transport.close()
                break
        if offset:
            del buffer[:offset]

    # -- frames -------------------------------------------------------------

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def _text(self, payload: bytes) -> None:
        pool = self.pool
        info = pool.parse(payload)
        if info is None:
            return
        now = time.time()
        pool.count += 1
        pool.last_recv = now
        task_id, version, status = info
        self.count += 1
        state = self.tasks.get(task_id)
        if state is None:
            self.tasks[task_id] = [version, status, [version], 1]
        else:
            state[3] += 1
            if version <= state[0]:
                self.out_of_order += 1
            if status != state[1]:
                state[2].append(version)
            state[0] = version
            state[1] = status
        if self.sampled:
            arrivals = self.arrivals.get(task_id)
            if arrivals is None:
                arrivals = self.arrivals[task_id] = ([], [])
            arrivals[0].append(version)
            arrivals[1].append(now)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send(0x8, (1000).to_bytes(2, "big"))
            self.transport.close()


def _sample(values: list[float]) -> list[float]:
    if len(values) > _SAMPLES_RETURNED:
        return random.sample(values, _SAMPLES_RETURNED)
    return values


def report(connections: list[Connection], truth_path: str) -> dict[str, Any]:
    """Check every connection against the producer's record of what it wrote.

    Lost transitions: versions where the status changed that the connection
    never saw. Lost finals: terminal versions it never saw. Lost messages:
    versions it never saw at all (expected to be 0 unless conflation kicked in).
    Latency: receipt minus the tracker call, per received version (sampled
    connections). Freshness: for every change, the time until the connection
    held that version or a newer one.
    """
    with open(truth_path) as source:
        truth = json.load(source)
    changes: dict[str, list[list]] = {}
    for task_id, version, status, t_call in truth["changes"]:
        changes.setdefault(task_id, []).append([version, status, t_call])
    transitions: dict[str, set[int]] = {}
    finals: dict[str, int] = {}
    called: dict[str, dict[int, float]] = {}
    for task_id, rows in changes.items():
        rows.sort()
        previous = None
        marks = set()
        for version, status, _ in rows:
            if status != previous:
                marks.add(version)
            previous = status
        transitions[task_id] = marks
        if rows[-1][1] in ("completed", "completed_with_errors", "failed"):
            finals[task_id] = rows[-1][0]
        called[task_id] = {version: t_call for version, _, t_call in rows}
    totals = dict.fromkeys(
        (
            "expected",
            "received",
            "lost_messages",
            "lost_transitions",
            "lost_finals",
            "expected_transitions",
            "out_of_order",
            "never_fresh",
            "unwanted",
        ),
        0,
    )
    latency: list[float] = []
    freshness: list[float] = []
    for conn in connections:
        wanted = [conn.task_id] if conn.task_id else list(changes)
        for task_id in wanted:
            rows = changes.get(task_id)
            if rows is None:
                continue
            state = conn.tasks.get(task_id)
            seen_marks = set(state[2]) if state else set()
            totals["expected"] += len(rows)
            totals["expected_transitions"] += len(transitions[task_id])
            totals["lost_transitions"] += len(transitions[task_id] - seen_marks)
            final = finals.get(task_id)
            if final is not None and (state is None or state[0] < final):
                totals["lost_finals"] += 1
            if not conn.sampled:
                continue
            versions, times = conn.arrivals.get(task_id, ([], []))
            for version, t_recv in zip(versions, times, strict=True):
                t_call = called[task_id].get(version)
                if t_call is not None:
                    latency.append(t_recv - t_call)
            # versions only rise on one connection, so the first arrival at or
            # above a version is found by bisection
            for version, _, t_call in rows:
                index = bisect.bisect_left(versions, version)
                if index < len(versions):
                    freshness.append(times[index] - t_call)
                else:
                    totals["never_fresh"] += 1
        totals["out_of_order"] += conn.out_of_order
    totals["received"] = sum(
        state[3]
        for conn in connections
        for task_id, state in conn.tasks.items()
        if task_id in changes
    )
    totals["unwanted"] = sum(
        state[3]
        for conn in connections
        if conn.task_id
        for task_id, state in conn.tasks.items()
        if task_id in changes and task_id != conn.task_id
    )
    totals["lost_messages"] = max(0, totals["expected"] - totals["received"])
    return {
        **totals,
        "latency": _sample(latency),
        "freshness": _sample(freshness),
    }


async def _connect(
    pool: Pool, url: str, task_id: str | None, sampled: bool, attempts: int = 5
) -> Connection:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    if task_id:
        path += ("&" if "?" in path else "?") + f"task_id={task_id}"
    loop = asyncio.get_running_loop()
    for attempt in range(attempts):
        try:
            _, conn = await loop.create_connection(
                lambda: Connection(pool, parts.netloc, path, task_id, sampled),
                parts.hostname,
                parts.port,
            )
            await asyncio.wait_for(conn.ready, 30)
            return conn
        except (OSError, ConnectionError, TimeoutError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--sampled", type=int, default=20)
    parser.add_argument("--task-ids", default="", help="file of task ids, one per connection")
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args(argv)
    raise_open_files()
    pool = Pool()
    task_ids: list[str | None] = [None] * args.connections
    if args.task_ids:
        with open(args.task_ids) as source:
            ids = source.read().split()
        task_ids = [ids[i % len(ids)] for i in range(args.connections)]
    sampled = set(random.sample(range(args.connections), min(args.sampled, args.connections)))
    gate = asyncio.Semaphore(args.concurrency)

    async def one(index: int) -> Connection | None:
        async with gate:
            try:
                return await _connect(pool, args.url, task_ids[index], index in sampled)
            except Exception:
                return None

    started = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(args.connections)))
    connections = [c for c in results if c is not None]
    emit(
        {
            "event": "connected",
            "ok": len(connections),
            "failed": args.connections - len(connections),
            "seconds": round(time.monotonic() - started, 2),
        }
    )

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        cmd = command["cmd"]
        if cmd == "reset":
            for conn in connections:
                conn.reset()
            pool.count = 0
            pool.last_recv = 0.0
            emit({"event": "reset"})
        elif cmd == "stats":
            emit(
                {
                    "event": "stats",
                    "count": pool.count,
                    "last_recv": pool.last_recv,
                    "open": sum(1 for c in connections if not c.transport.is_closing()),
                    "closed": pool.closed,
                }
            )
        elif cmd == "report":
            figures = report(connections, command["truth"])
            figures["last_recv"] = pool.last_recv
            figures["closed"] = pool.closed
            emit({"event": "report", **figures})
        elif cmd == "quit":
            break
    for conn in connections:
        conn.close()
    await asyncio.sleep(0.2)


def emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
