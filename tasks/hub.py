"""Per-process fan-out of task updates to this process's WebSocket clients.

One hub per server process holds one subscription to the updates channel
(Redis pub/sub, or the in-process hand-off when no ``REDIS_URL``), keeps an
index of its clients' subscriptions, and hands each update, encoded once, to
exactly the clients that want it. Under daphne the WebSocket frame is also
built once and sent straight to each client's socket, so one more watcher
costs one ``send``, not a trip through a channel layer, a consumer and the
reactor. When the process falls behind its producers, what waits on the
subscription is conflated once and sent to each client as one byte string.

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
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from . import metrics
from .groups import ALL, operation_key, task_key, updates_channel
from .models import TERMINAL_STATUSES

logger = logging.getLogger(__name__)

CLOSE_SLOW_CLIENT = 4013
CLOSE_SHUTDOWN = 4001
CLOSE_SERVER_ERROR = 1011
LISTEN_WAIT_SECONDS = 5.0
EMBEDDED_POLL_SECONDS = 1.0
_VERSIONS_KEPT = 100_000
_BATCH_MAX = 10_000
# A round that found a backlog is followed by a pause of this many times its
# own length, capped: most of a flooded client's freshness lag is the pause
# (docs/performance.md, "Paced rounds").
_ROUND_PAUSE = 3.0
_ROUND_PAUSE_MAX = 0.05
# Updates a slow client's backlog replaced by newer ones: a plain int on that slow
# path, read when metrics are scraped (tasks/metrics.py), never a metric call.
client_conflated = 0
_UPDATED_AT = '"updated_at":'


class Update:
    """One change as the hub routes it; its WebSocket frame is built at most once."""

    __slots__ = ("task_id", "operation", "version", "status", "text", "conflatable", "_frame")

    def __init__(self, task_id: str, operation: str, version: int, status: str, text: str):
        self.task_id = task_id
        self.operation = operation
        self.version = version
        self.status = status
        self.text = text
        self.conflatable = False
        self._frame: bytes | None = None

    @classmethod
    def parse(cls, data: str | bytes) -> Update:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        header, text = data.split("\n", 1)
        task_id, operation, version, status = header.split(" ")
        return cls(task_id, operation, int(version), status, text)

    @property
    def frame(self) -> bytes:
        """The whole server-to-client text frame (unmasked, uncompressed), for every client.

        An uncompressed frame is valid on every connection, permessage-deflate
        negotiated or not, so one byte string serves them all.
        """
        if self._frame is None:
            payload = self.text.encode("utf-8")
            size = len(payload)
            if size < 126:
                head = bytes((0x81, size))
            elif size < 65536:
                head = b"\x81\x7e" + size.to_bytes(2, "big")
            else:
                head = b"\x81\x7f" + size.to_bytes(8, "big")
            self._frame = head + payload
        return self._frame


def conflate(updates: list[Update]) -> list[Update]:
    """Newest progress per task wins; transitions and final states keep their place.

    A conflatable update (same status as the one before it, not terminal)
    replaces the task's pending conflatable update if nothing of that task
    came after it; anything else is kept, in order.
    """
    kept: list[Update] = []
    replaceable: dict[str, int] = {}
    for update in updates:
        index = replaceable.get(update.task_id)
        if update.conflatable and index is not None:
            kept[index] = update
            continue
        if update.conflatable:
            replaceable[update.task_id] = len(kept)
        else:
            replaceable.pop(update.task_id, None)
        kept.append(update)
    return kept


def _daphne_protocol(send: Callable) -> Any | None:
    """Daphne's protocol behind an ASGI ``send``, to write frames to its socket directly.

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


def _plain_socket(transport: Any) -> Any | None:
    """The socket under a plain Twisted TCP transport (not TLS), else None."""
    from twisted.internet import tcp

    if isinstance(transport, tcp.Connection) and not getattr(transport, "TLS", False):
        return getattr(transport, "socket", None)
    return None


def _buffered_bytes(transport: Any) -> int:
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:
        return 0


class Delivery:
    """Sends updates to one client, conflating while its socket is full.

    Under daphne a frame goes straight to the socket with one ``send`` when
    nothing is waiting before it (Twisted's own ``write`` would register the
    socket with the reactor and send it on the next turn of the loop: two
    ``epoll_ctl`` calls and a wake-up per client per message). What the kernel
    does not take waits in Twisted's buffer, and from then on the client is
    *behind*: updates queue in a backlog where newest progress replaces older
    progress of the same task, while transitions and final states keep their
    place, until the socket drains. A client whose unsent bytes stay above
    ``WS_SEND_HIGH_WATER`` for ``WS_SLOW_CLIENT_SECONDS``, or whose backlog
    passes ``WS_OUTBOX_LIMIT``, is closed with 4013.
    """

    __slots__ = ("_send", "_close", "_protocol", "_socket", "_backlog", "_replaceable",
                 "_backlog_bytes", "_drainer", "_behind_since", "_refused", "closed")

    def __init__(
        self,
        send: Callable[[dict], Awaitable[None]],
        close: Callable[[int], Awaitable[None]],
    ) -> None:
        self._send = send
        self._close = close
        self._protocol = _daphne_protocol(send)
        self._socket = None
        if self._protocol is not None:
            self._socket = _plain_socket(self._protocol.transport)
        # made on first use: most clients never fall behind, and an idle
        # connection should cost as little as possible
        self._backlog: list[list] | None = None
        self._replaceable: dict[str, list] | None = None
        self._backlog_bytes = 0
        self._drainer: asyncio.Task | None = None
        self._behind_since = 0.0
        self._refused = False
        self.closed = False

    def _behind(self) -> bool:
        """The kernel refused part of what we sent and Twisted still holds it.

        Bytes that daphne itself wrote (a ``subscribed`` reply, a pong) also
        wait in Twisted's buffer until the next turn of the loop; that is not
        being behind, and updates then queue after them in order.
        """
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            return False
        buffered = _buffered_bytes(protocol.transport)
        if buffered == 0:
            self._refused = False
            return False
        return self._refused or buffered > settings.WS_SEND_HIGH_WATER

    def _write(self, data: bytes, text: str | None = None) -> None:
        protocol = self._protocol
        if protocol is None:
            asyncio.ensure_future(self._send({"type": "websocket.send", "text": text}))
            return
        transport = protocol.transport
        if protocol.state != protocol.STATE_OPEN or transport is None:
            return
        if protocol.send_queue:
            protocol.sendData(data)  # behind autobahn's own queued frames, in order
            return
        sock = self._socket
        if sock is not None and _buffered_bytes(transport) == 0:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                return  # the connection is gone; Twisted notices on its next read
            if sent == len(data):
                return
            data = data[sent:]
            self._refused = True
        transport.write(data)

    def offer(self, update: Update) -> None:
        if self.closed:
            return
        if not self._backlog and not self._behind():
            self._write(update.frame, update.text)
            return
        self._queue(update)

    def offer_many(self, updates: list[Update], blob: bytes | None) -> None:
        """Several updates at once: one ``send`` of their frames when the socket is free."""
        if self.closed:
            return
        if self._protocol is not None and not self._backlog and not self._behind():
            self._write(blob if blob is not None else b"".join(u.frame for u in updates))
            return
        for update in updates:
            self.offer(update)

    def _queue(self, update: Update) -> None:
        global client_conflated
        if self._backlog is None:
            self._backlog, self._replaceable = [], {}
        entry = self._replaceable.get(update.task_id)
        if update.conflatable and entry is not None:
            client_conflated += 1
            self._backlog_bytes += len(update.frame) - len(entry[1].frame)
            entry[1] = update
            return
        entry = [update.task_id, update]
        self._backlog.append(entry)
        self._backlog_bytes += len(update.frame)
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

    def _unsent_bytes(self) -> int:
        transport = self._protocol.transport if self._protocol is not None else None
        return self._backlog_bytes + (_buffered_bytes(transport) if transport else 0)

    async def _drain(self) -> None:
        """Write the whole backlog at once each time the socket has drained."""
        try:
            while self._backlog and not self.closed:
                if self._behind():
                    now = time.monotonic()
                    if self._unsent_bytes() <= settings.WS_SEND_HIGH_WATER:
                        self._behind_since = now
                    elif now - self._behind_since > settings.WS_SLOW_CLIENT_SECONDS:
                        self.cut_off("too slow to read")
                        return
                    await asyncio.sleep(0.02)
                    continue
                self._behind_since = time.monotonic()
                updates = [update for _, update in self._backlog]
                self._backlog = self._replaceable = None
                self._backlog_bytes = 0
                if self._protocol is not None:
                    self._write(b"".join(u.frame for u in updates))
                else:
                    for update in updates:
                        self._write(update.frame, update.text)
        finally:
            self._drainer = None

    def cut_off(self, reason: str) -> None:
        if self.closed:
            return
        logger.warning("closing a WebSocket client with %s: %s", CLOSE_SLOW_CLIENT, reason)
        metrics.WS_SLOW_CLOSED.labels("backlog" if "backlog" in reason else "slow").inc()
        if self._backlog:
            metrics.WS_DROPPED.inc(len(self._backlog))
        self.closed = True
        self._backlog = self._replaceable = None
        self._backlog_bytes = 0
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
        self._failed: set[Any] = set()  # clients being closed after a failed delivery
        self._shutdown_hooked = False
        # paced rounds (see ``_arrived``)
        self._waiting: list[str | bytes] = []
        self._round_due: asyncio.TimerHandle | None = None
        self._next_round = 0.0
        # set while the subscription is live: catch-up reads the database only
        # then, so that nothing published after its snapshot can go unheard
        self._listening: asyncio.Event | None = None

    # -- connections and subscriptions ---------------------------------------

    def connect(self, client: Any) -> None:
        self._connected.add(client)

    def disconnect(self, client: Any) -> None:
        self._connected.discard(client)
        self._failed.discard(client)

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
        self.dispatch_many([update])

    def _accept(self, update: Update) -> bool:
        """Drop what is not newer than what was routed; mark plain progress conflatable."""
        known = self._versions.get(update.task_id)
        if known is not None and known[0] >= update.version:
            return False
        update.conflatable = (
            known is not None
            and known[1] == update.status
            and update.status not in TERMINAL_STATUSES
        )
        self._versions[update.task_id] = (update.version, update.status)
        self._versions.move_to_end(update.task_id)
        if len(self._versions) > _VERSIONS_KEPT:
            self._versions.popitem(last=False)
        return True

    def dispatch_many(self, updates: list[Update]) -> None:
        """Route what the subscription had waiting, conflated, to the clients that want it.

        More than one update is waiting only when this process fell behind the
        producers; then every client would be behind too, so plain progress is
        conflated here, once, before the fan-out rather than per client after
        it. Clients of everything get the survivors as one byte string, one
        ``send`` each; other clients get what matches their subscriptions.
        """
        offered = len(updates)
        accepted = [update for update in updates if self._accept(update)]
        updates = conflate(accepted)
        if len(accepted) != offered:
            metrics.HUB_DROPPED.labels("stale").inc(offered - len(accepted))
        if not updates:
            return
        delivered = self._fan_out(updates)
        # Counted once per round, never per client per frame (docs/performance.md).
        metrics.HUB_ROUNDS.inc()
        metrics.HUB_ROUTED.inc(len(updates))
        if delivered:
            metrics.HUB_FRAMES.inc(delivered)
        if len(accepted) != len(updates):
            metrics.HUB_CONFLATED.inc(len(accepted) - len(updates))
        lag = _age(updates[0])
        if lag is not None:
            metrics.HUB_LAG.observe(lag)

    def _fan_out(self, updates: list[Update]) -> int:
        """Hand ``updates`` to the clients that want them; returns the frames handed out."""
        everyone = self._routes.get(ALL, ())
        if everyone:
            if len(updates) == 1:
                update = updates[0]
                for client in everyone:
                    try:
                        client.deliver(update)
                    except Exception:
                        self._delivery_failed(client)
            else:
                blob = b"".join(update.frame for update in updates)
                for client in everyone:
                    try:
                        client.deliver_many(updates, blob)
                    except Exception:
                        self._delivery_failed(client)
        delivered = len(everyone) * len(updates)
        routes = self._routes
        if len(routes) <= (1 if everyone else 0):
            return delivered
        wanted: dict[Any, list[Update]] = {}
        for update in updates:
            by_operation = routes.get(operation_key(update.operation), ())
            for clients in (by_operation, routes.get(task_key(update.task_id), ())):
                for client in clients:
                    if client in everyone or (clients is not by_operation
                                              and client in by_operation):
                        continue
                    wanted.setdefault(client, []).append(update)
        for client, mine in wanted.items():
            try:
                if len(mine) == 1:
                    client.deliver(mine[0])
                else:
                    client.deliver_many(mine, None)
            except Exception:
                self._delivery_failed(client)
        return delivered + sum(map(len, wanted.values()))

    def _delivery_failed(self, client: Any) -> None:
        """One client's failure must not cost the others their update: close it (1011)."""
        if client in self._failed:
            return
        self._failed.add(client)
        logger.exception("delivery to a WebSocket client failed; closing it with %s",
                         CLOSE_SERVER_ERROR)
        client.shut_down(CLOSE_SERVER_ERROR)

    def dispatch_raw(self, data: str | bytes) -> None:
        self.dispatch_raw_many([data])

    def dispatch_raw_many(self, items: list[str | bytes]) -> None:
        updates = []
        for data in items:
            try:
                updates.append(Update.parse(data))
            except (ValueError, UnicodeDecodeError):
                logger.error("dropping a malformed update from the updates channel")
                metrics.HUB_DROPPED.labels("malformed").inc()
        self.dispatch_many(updates)

    def _arrived(self, items: list[str | bytes]) -> None:
        """Route what came off the subscription now, or with the next round if one is due.

        A round that found more than one update waiting (the hub is behind its
        producers) is followed by a pause of ``_ROUND_PAUSE`` times its own
        length, at most ``_ROUND_PAUSE_MAX``; what arrives meanwhile goes out
        with the next round, conflated. A hub that keeps up routes every update
        at once, so nothing is added to latency at ordinary rates, while a
        flooded one spends about a quarter of its time fanning out and each
        client gets a bounded number of wake-ups a second, however fast
        producers write.
        """
        self._waiting.extend(items)
        if self._round_due is not None:
            return
        delay = self._next_round - self._loop.time()
        if delay > 0:
            self._round_due = self._loop.call_later(delay, self._round)
        else:
            self._round()

    def _round(self) -> None:
        self._round_due = None
        items, self._waiting = self._waiting, []
        started = self._loop.time()
        try:
            self.dispatch_raw_many(items)
        finally:
            now = self._loop.time()
            pause = min((now - started) * _ROUND_PAUSE, _ROUND_PAUSE_MAX) if len(items) > 1 else 0
            self._next_round = now + pause
            metrics.HUB_ROUND_SECONDS.observe(now - started)

    # -- the subscription --------------------------------------------------

    def ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._reader is not None and not self._reader.done():
            return
        self._loop = loop
        self._listening = asyncio.Event()
        self._hook_shutdown()
        if settings.REDIS_URL:
            self._reader = loop.create_task(self._read_redis())
        else:
            self._listening.set()  # the in-process hand-off cannot miss anything
            self._reader = loop.create_task(self._poll_database())

    async def listening(self, timeout: float = LISTEN_WAIT_SECONDS) -> bool:
        """Wait until the subscription is live (False if it is not within ``timeout``).

        A catch-up that reads the database before the subscription is live
        could miss a change published in between; one that gives up waiting
        (Redis down) still answers, and the gap repair re-sends what changed
        once the subscription is back.
        """
        if self._listening is None:
            return False
        try:
            await asyncio.wait_for(self._listening.wait(), timeout)
            return True
        except TimeoutError:
            return False

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
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(updates_channel())
                await self._confirmed(pubsub)
                self._listening.set()
                if gap_since is not None:
                    metrics.HUB_RECONNECTS.inc()
                    await self._repair_gap(gap_since)
                    gap_since = None
                backoff = 0.2
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is None or message["type"] != "message":
                        continue
                    # whatever else is already waiting is routed with it, conflated
                    waiting = [message["data"]]
                    while len(waiting) < _BATCH_MAX:
                        message = await pubsub.get_message(timeout=0)
                        if message is None:
                            break
                        if message["type"] == "message":
                            waiting.append(message["data"])
                    self._arrived(waiting)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or the connection dropped
                self._listening.clear()
                metrics.HUB_SUBSCRIPTION_LOST.inc()
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

    @staticmethod
    async def _confirmed(pubsub: Any) -> None:
        """Wait for Redis to confirm the SUBSCRIBE: only from then on is nothing missed."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "subscribe":
                return
        raise ConnectionError("no confirmation of the updates subscription")

    async def _poll_database(self) -> None:
        """Embedded default: also hear writers in other processes (``run_operation``, a shell).

        Without Redis only this process's changes arrive by hand-off; every
        ``EMBEDDED_POLL_SECONDS`` the tasks changed since the last look are read
        from the database and routed, and the version check drops what clients
        already have. One indexed query a second, and only while clients exist.
        """
        from channels.db import database_sync_to_async

        from .selectors import changed_since_wire

        since = time.time()
        while True:
            await asyncio.sleep(EMBEDDED_POLL_SECONDS)
            if not self._connected:
                since = time.time()
                continue
            started = time.time()
            try:
                # a change commits a moment after its updated_at is taken
                messages = await database_sync_to_async(changed_since_wire)(since - 2.0)
            except Exception:
                logger.warning("could not read changed tasks from the database", exc_info=True)
                continue
            since = started
            if messages:
                self.dispatch_raw_many(messages)

    async def _repair_gap(self, since: float) -> None:
        """Re-send what changed while the subscription was down, from the database."""
        from channels.db import database_sync_to_async

        from .selectors import changed_since_wire

        messages = await database_sync_to_async(changed_since_wire)(since - 1.0)
        self.dispatch_raw_many(messages)
        logger.info("updates subscription restored; re-sent %d changed tasks", len(messages))


def _age(update: Update) -> float | None:
    """Seconds since the task's ``updated_at`` (whole seconds in the payload).

    The wire format carries no publish time; ``updated_at`` is the last key but
    ``version`` of the frame, so it is found from the end without parsing the JSON.
    """
    text = update.text
    at = text.rfind(_UPDATED_AT)
    if at < 0:
        return None
    start = at + len(_UPDATED_AT)
    end = text.find(",", start)
    try:
        return max(0.0, time.time() - int(text[start:end if end > 0 else None]))
    except ValueError:
        return None


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
