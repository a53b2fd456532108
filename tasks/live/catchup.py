"""Catch-up reads shared by the clients that ask at the same time.

After a restart every client comes back at once, most with ``since=`` and a
subscription to everything. One query each would queue thousands of reads on
the database and as many thread hops; here the clients waiting for a read of
everything share one: each asks ``shared_reads.everything_since(since)`` after
it has registered with the hub (the no-gap rule of ``tasks.consumers``), and
the next read to *start* serves every client that asked before it started,
from the oldest ``since`` among them. A read already under way never serves a
client that asked after it began. Each row is encoded once for all of them;
each client takes the rows at or after its own ``since``.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable

from channels.db import database_sync_to_async

from ..selectors import changed_since
from . import wire
from .wire import Update


class Snapshot:
    """Rows changed since a floor, oldest first, encoded once for every client of a read."""

    __slots__ = ("updated", "updates")

    def __init__(self, updated: list[float], updates: list[Update]) -> None:
        self.updated = updated
        self.updates = updates

    def since(self, since: float) -> list[Update]:
        """The updates at or after ``since`` (whole seconds, as ``changed_since`` compares)."""
        return self.updates[bisect.bisect_left(self.updated, float(int(since))) :]


def read_everything_since(since: float) -> Snapshot:
    """One read of every visible task changed since ``since``, encoded (run in a thread)."""
    tasks = changed_since(since, everything=True)
    return Snapshot([task.updated_at for task in tasks], [wire.encode(task) for task in tasks])


class SharedReads:
    """One database read at a time for every client waiting on a catch-up of everything."""

    def __init__(self, read: Callable[[float], Snapshot] = read_everything_since) -> None:
        self._read = database_sync_to_async(read)
        self._waiting: list[tuple[float, asyncio.Future[Snapshot]]] = []
        self._reader: asyncio.Task | None = None
        self.reads = 0  # how many queries served how many clients (tests, docs)
        self.served = 0

    async def everything_since(self, since: float) -> list[Update]:
        future: asyncio.Future[Snapshot] = asyncio.get_running_loop().create_future()
        self._waiting.append((since, future))
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._serve())
        return (await future).since(since)

    async def _serve(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    snapshot = await self._read(min(since for since, _ in batch))
                except Exception as exc:  # each waiting client answers its own error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.reads += 1
                self.served += len(batch)
                for _, future in batch:
                    if not future.done():
                        future.set_result(snapshot)
        finally:
            self._reader = None


shared_reads = SharedReads()
