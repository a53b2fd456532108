"""Per-process fan-out of task updates to this process's WebSocket clients.

One hub per server process holds one subscription to the updates channel
(Redis pub/sub, or the in-process hand-off when no ``REDIS_URL``), keeps an
index of its clients' subscriptions, and hands each update, encoded once, to
exactly the clients that want it. Under daphne the frame is also framed once
(autobahn's prepared message) and written straight to each client's transport,
so one more watcher costs one buffered write, not a trip through a channel
layer and a consumer.

Invariants:
- versions only rise per task on the live stream of a process (stale
  publications from racing writers are dropped here);
- a client whose socket cannot keep up gets intermediate progress conflated
  (newest wins) while status transitions are kept in order; one that stays
  behind is closed with 4013 (see ``Delivery``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from .groups import ALL, operation_key, task_key, updates_channel
from .models import TERMINAL_STATUSES

logger = logging.getLogger(__name__)

CLOSE_SLOW_CLIENT = 4013
CLOSE_SHUTDOWN = 4001
_VERSIONS_KEPT = 100_000


class Update:
    """One change as the hub routes it; the frame is framed at most once."""

    __slots__ = ("task_id", "operation", "version", "status", "text", "conflatable", "_prepared")

    def __init__(self, task_id: str, operation: str, version: int, status: str, text: str):
        self.task_id = task_id
        self.operation = operation
        self.version = version
        self.status = status
        self.text = text
        self.conflatable = False
        self._prepared = None

    @classmethod
    def parse(cls, data: str | bytes) -> Update:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        header, text = data.split("\n", 1)
        task_id, operation, version, status = header.split(" ")
        return cls(task_id, operation, int(version), status, text)

    def prepared(self, protocol: Any) -> Any:
        if self._prepared is None:
            self._prepared = protocol.factory.prepareMessage(
                self.text.encode("utf-8"), isBinary=False, doNotCompress=True
            )
        return self._prepared


def _daphne_protocol(send: Callable) -> Any | None:
    """Daphne's protocol behind an ASGI ``send``, to write prepared frames directly.

    Also turns off autobahn's ``failByDrop`` (for this connection and those
    after it): with it on, daphne answers an oversized frame by dropping TCP
    (1006) instead of the close code 1009 that the contract promises.
    """
    protocol = getattr(send, "args", (None,))[0]
    if protocol is not None and hasattr(protocol, "sendPreparedMessage"):
        protocol.failByDrop = False
        protocol.factory.failByDrop = False
        return protocol
    return None


def _buffered_bytes(transport: Any) -> int:
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:
        return 0


class Delivery:
    """Sends updates to one client, conflating when its socket falls behind."""

    def __init__(
        self,
        send: Callable[[dict], Awaitable[None]],
        close: Callable[[int], Awaitable[None]],
    ) -> None:
        self._send = send
        self._close = close
        self._protocol = _daphne_protocol(send)
        self._backlog: deque[list] = deque()
        self._replaceable: dict[str, list] = {}
        self._drainer: asyncio.Task | None = None
        self._behind_since: float | None = None
        self.closed = False

    def _congested(self) -> bool:
        if self._protocol is None or self._protocol.transport is None:
            return False
        return _buffered_bytes(self._protocol.transport) > settings.WS_SEND_HIGH_WATER

    def _write(self, update: Update) -> None:
        protocol = self._protocol
        if protocol is not None:
            if protocol.state == protocol.STATE_OPEN:
                protocol.sendPreparedMessage(update.prepared(protocol))
        else:
            asyncio.ensure_future(self._send({"type": "websocket.send", "text": update.text}))

    def offer(self, update: Update) -> None:
        if self.closed:
            return
        if not self._backlog and not self._congested():
            self._write(update)
            return
        entry = self._replaceable.get(update.task_id)
        if update.conflatable and entry is not None:
            entry[1] = update
            return
        entry = [update.task_id, update]
        self._backlog.append(entry)
        if update.conflatable:
            self._replaceable[update.task_id] = entry
        else:
            self._replaceable.pop(update.task_id, None)
        if len(self._backlog) > settings.WS_OUTBOX_LIMIT:
            self.cut_off("backlog over limit")
            return
        if self._drainer is None:
            self._behind_since = time.monotonic()
            self._drainer = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            while self._backlog and not self.closed:
                if self._congested():
                    if time.monotonic() - self._behind_since > settings.WS_SLOW_CLIENT_SECONDS:
                        self.cut_off("too slow to read")
                        return
                    await asyncio.sleep(0.05)
                    continue
                self._behind_since = time.monotonic()
                task_id, update = self._backlog.popleft()
                if (
                    self._replaceable.get(task_id) is not None
                    and self._replaceable[task_id][1] is update
                ):
                    del self._replaceable[task_id]
                self._write(update)
        finally:
            self._drainer = None

    def cut_off(self, reason: str) -> None:
        if self.closed:
            return
        logger.warning("closing a WebSocket client with %s: %s", CLOSE_SLOW_CLIENT, reason)
        self.closed = True
        self._backlog.clear()
        self._replaceable.clear()
        asyncio.ensure_future(self._close_behind_backlog())

    async def _close_behind_backlog(self) -> None:
        """Close with 4013 after what is already buffered, and buffer nothing more.

        The close frame sits behind the data the client has not read; autobahn's
        close-handshake timeout would abort the socket and discard it all, so the
        client could never learn why. Instead the socket is half-closed once the
        buffer drains, and a client that reads at last sees 4013.
        """
        protocol = self._protocol
        if protocol is not None:
            protocol.closeHandshakeTimeout = 0
        await self._close(CLOSE_SLOW_CLIENT)
        if protocol is not None and protocol.transport is not None:
            protocol.transport.loseConnection()


class Hub:
    """The process's one subscription and its routing index."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], set[Any]] = {}
        self._versions: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: asyncio.Task | None = None
        self._connected: set[Any] = set()
        self._shutdown_hooked = False

    # -- connections and subscriptions ---------------------------------------

    def connect(self, client: Any) -> None:
        self._connected.add(client)

    def disconnect(self, client: Any) -> None:
        self._connected.discard(client)

    def add(self, client: Any, key: tuple[str, str]) -> None:
        self._routes.setdefault(key, set()).add(client)

    def discard(self, client: Any, key: tuple[str, str]) -> None:
        clients = self._routes.get(key)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self._routes[key]

    # -- routing -----------------------------------------------------------

    def dispatch(self, update: Update) -> None:
        known = self._versions.get(update.task_id)
        if known is not None and known[0] >= update.version:
            return
        update.conflatable = (
            known is not None
            and known[1] == update.status
            and update.status not in TERMINAL_STATUSES
        )
        self._versions[update.task_id] = (update.version, update.status)
        self._versions.move_to_end(update.task_id)
        if len(self._versions) > _VERSIONS_KEPT:
            self._versions.popitem(last=False)

        everyone = self._routes.get(ALL, ())
        for client in everyone:
            client.deliver(update)
        for key in (operation_key(update.operation), task_key(update.task_id)):
            for client in self._routes.get(key, ()):
                if client not in everyone:
                    client.deliver(update)

    def dispatch_raw(self, data: str | bytes) -> None:
        try:
            update = Update.parse(data)
        except (ValueError, UnicodeDecodeError):
            logger.error("dropping a malformed update from the updates channel")
            return
        self.dispatch(update)

    # -- the subscription --------------------------------------------------

    def ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._reader is not None and not self._reader.done():
            return
        self._loop = loop
        self._hook_shutdown()
        if settings.REDIS_URL:
            self._reader = loop.create_task(self._read_redis())
        else:
            self._reader = loop.create_task(asyncio.sleep(0))

    def _hook_shutdown(self) -> None:
        """On SIGTERM, close every client with 4001 (reconnect) before the server stops.

        daphne (Twisted) stops on SIGTERM and would drop sockets without a close
        frame; chaining its handler lets clients tell a restart from a fault.
        """
        if self._shutdown_hooked or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return
        loop = self._loop

        def on_term(signum: int, frame: Any) -> None:
            loop.call_soon_threadsafe(self._shut_down, previous, signum, frame)

        signal.signal(signal.SIGTERM, on_term)
        self._shutdown_hooked = True

    def _shut_down(self, previous: Callable, signum: int, frame: Any) -> None:
        clients = list(self._connected)
        logger.info("shutting down: closing %d WebSocket clients with %s", len(clients), 4001)
        for client in clients:
            client.shut_down(CLOSE_SHUTDOWN)
        self._loop.call_later(0.3 if clients else 0, previous, signum, frame)

    async def _read_redis(self) -> None:
        import redis.asyncio as aioredis

        backoff = 0.2
        gap_since: float | None = None
        while True:
            client = aioredis.Redis.from_url(
                settings.REDIS_URL,
                socket_connect_timeout=5,
                client_name=f"task-status-hub:{os.getpid()}",
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(updates_channel())
                if gap_since is not None:
                    await self._repair_gap(gap_since)
                backoff = 0.2
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is not None and message["type"] == "message":
                        self.dispatch_raw(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or the connection dropped
                if gap_since is None:
                    gap_since = time.time()
                logger.warning("updates subscription lost (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:
                    pass

    async def _repair_gap(self, since: float) -> None:
        """Re-send what changed while the subscription was down, from the database."""
        from channels.db import database_sync_to_async

        from .selectors import changed_since_wire

        messages = await database_sync_to_async(changed_since_wire)(since - 1.0)
        for data in messages:
            self.dispatch_raw(data)
        logger.info("updates subscription restored; re-sent %d changed tasks", len(messages))


hub = Hub()


def local_publish(data: str) -> None:
    """In-process hand-off (no Redis): deliver on the hub's loop, from any thread."""
    loop = hub._loop
    if loop is None or loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        hub.dispatch_raw(data)
    else:
        loop.call_soon_threadsafe(hub.dispatch_raw, data)
