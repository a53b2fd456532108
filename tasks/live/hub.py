"""Per-process fan-out of task updates to this process's WebSocket clients.

One hub per server process holds one subscription to the updates channel
(Redis pub/sub, or the in-process hand-off it registers with ``broadcast``
when there is no ``REDIS_URL``), keeps an index of its clients' subscriptions
(``routes``), and hands each update, encoded once (``wire``), to exactly the
clients that want it (``delivery.Client``). When the process falls behind its
producers, what waits on the subscription is conflated once and sent to each
client as one byte string. Rows it reads itself (gap repair after a dropped
subscription, the embedded default's polling) come through ``tasks.selectors``
and are encoded through ``wire`` like every other update.

Invariants:
- versions only rise per task on the live stream of a process (stale
  publications from racing writers are dropped here);
- a client whose socket cannot keep up gets intermediate progress conflated
  (newest wins) while status transitions are kept in order; one that stays
  behind is closed with 4013 (see ``delivery.Delivery``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from django.conf import settings

from .. import metrics
from ..models import TERMINAL_STATUSES
from ..selectors import changed_since
from . import broadcast, wire
from .delivery import Client
from .routes import ALL, RouteKey, operation_key, task_key, updates_channel
from .wire import Update, conflate

logger = logging.getLogger(__name__)

CLOSE_SHUTDOWN = 4001
CLOSE_SERVER_ERROR = 1011
LISTEN_WAIT_SECONDS = 5.0
EMBEDDED_POLL_SECONDS = 1.0
# A publish can fail some time before the reader notices its subscription is gone
# (the writers see Redis go first, a dead peer is found only on the next read), so
# the repair looks back this far before the drop was noticed. One indexed read of
# a minute of changes; the version check discards what clients already have.
GAP_LOOKBACK_SECONDS = 60.0
_VERSIONS_KEPT = 100_000
_BATCH_MAX = 10_000
# A round that found a backlog is followed by a pause of this many times its
# own length, capped: most of a flooded client's freshness lag is the pause
# (docs/performance.md, "Paced rounds").
_ROUND_PAUSE = 3.0
_ROUND_PAUSE_MAX = 0.05


def _changed_since(since: float) -> list[Update]:
    """Updates of every task changed since ``since``, read and encoded off the loop."""
    return [wire.encode(task) for task in changed_since(since, everything=True)]


class Hub:
    """The process's one subscription and its routing index."""

    def __init__(self) -> None:
        self._routes: dict[RouteKey, set[Client]] = {}
        self._versions: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: asyncio.Task | None = None
        self._connected: set[Client] = set()
        self._failed: set[Client] = set()  # clients being closed after a failed delivery
        self._shutdown_hooked = False
        # paced rounds (see ``_arrived``)
        self._waiting: list[str | bytes] = []
        self._round_due: asyncio.TimerHandle | None = None
        self._next_round = 0.0
        # set while the subscription is live: catch-up reads the database only
        # then, so that nothing published after its snapshot can go unheard
        self._listening: asyncio.Event | None = None
        self._listened = False  # the subscription was confirmed at least once

    # -- connections and subscriptions ---------------------------------------

    def connect(self, client: Client) -> None:
        self._connected.add(client)

    def disconnect(self, client: Client) -> None:
        self._connected.discard(client)
        self._failed.discard(client)

    def add(self, client: Client, key: RouteKey) -> None:
        self._routes.setdefault(key, set()).add(client)

    def discard(self, client: Client, key: RouteKey) -> None:
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
        lag = wire.age(updates[0])
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
        wanted: dict[Client, list[Update]] = {}
        for update in updates:
            by_operation = routes.get(operation_key(update.operation), ())
            for clients in (by_operation, routes.get(task_key(update.task_id), ())):
                for client in clients:
                    if client in everyone or (
                        clients is not by_operation and client in by_operation
                    ):
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

    def _delivery_failed(self, client: Client) -> None:
        """One client's failure must not cost the others their update: close it (1011)."""
        if client in self._failed:
            return
        self._failed.add(client)
        logger.exception(
            "delivery to a WebSocket client failed; closing it with %s", CLOSE_SERVER_ERROR
        )
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
        loop = self._loop
        assert loop is not None  # set by ensure_started before the reader that calls this
        delay = self._next_round - loop.time()
        if delay > 0:
            self._round_due = loop.call_later(delay, self._round)
        else:
            self._round()

    def _round(self) -> None:
        self._round_due = None
        items, self._waiting = self._waiting, []
        loop = self._loop
        assert loop is not None  # run on it by _arrived
        started = loop.time()
        try:
            self.dispatch_raw_many(items)
        finally:
            now = loop.time()
            pause = min((now - started) * _ROUND_PAUSE, _ROUND_PAUSE_MAX) if len(items) > 1 else 0
            self._next_round = now + pause
            metrics.HUB_ROUND_SECONDS.observe(now - started)

    # -- the subscription --------------------------------------------------

    def ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._reader is not None and not self._reader.done():
            return
        if self._loop is None:
            # What the process allocated to start (Django, the apps, the server)
            # lives as long as it does. Out of the collector's sight, each full
            # collection, which thousands of arriving connections trigger again
            # and again, scans only what came after (docs/performance.md).
            gc.freeze()
        self._loop = loop
        self._listening = asyncio.Event()
        self._listened = False
        self._hook_shutdown(loop)
        # publish_change hands this process's changes over directly when there is no Redis
        broadcast.register_hand_off(self.hand_off)
        if settings.REDIS_URL:
            self._reader = loop.create_task(self._read_redis())
        else:
            self._listening.set()  # the in-process hand-off cannot miss anything
            self._reader = loop.create_task(self._poll_database())

    def hand_off(self, data: str) -> None:
        """In-process hand-off (no Redis): deliver on the hub's loop, from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.dispatch_raw(data)
        else:
            loop.call_soon_threadsafe(self.dispatch_raw, data)

    async def first_listened(self) -> None:
        """Wait, as ``listening`` does, only for a fresh process's first subscription.

        A client told "subscribed" before the hub ever listened could miss the
        changes published meanwhile; after a later drop, the gap repair re-sends.
        """
        if not self._listened:
            await self.listening()

    async def listening(self, timeout: float = LISTEN_WAIT_SECONDS) -> bool:
        """Wait until the subscription is live (False if it is not within ``timeout``).

        A catch-up that reads the database before the subscription is live
        could miss a change published in between; one that gives up waiting
        (Redis down) still answers, and the gap repair re-sends what changed
        once the subscription is back.
        """
        if self._listening is None:
            return False
        if self._listening.is_set():  # the usual case: no timer, no task
            return True
        try:
            await asyncio.wait_for(self._listening.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def _hook_shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        """On SIGTERM, close every client with 4001 (reconnect) before the server stops.

        daphne (Twisted) stops on SIGTERM and would drop sockets without a close
        frame; chaining its handler lets clients tell a restart from a fault.
        """
        if self._shutdown_hooked or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return

        def on_term(signum: int, frame: Any) -> None:
            loop.call_soon_threadsafe(self._shut_down, previous, signum, frame)

        signal.signal(signal.SIGTERM, on_term)
        self._shutdown_hooked = True

    def _shut_down(self, previous: Callable, signum: int, frame: Any) -> None:
        clients = list(self._connected)
        logger.info("shutting down: closing %d WebSocket clients with %s", len(clients), 4001)
        for client in clients:
            client.shut_down(CLOSE_SHUTDOWN)
        loop = self._loop
        assert loop is not None  # on_term scheduled this on it
        loop.call_later(0.3 if clients else 0, previous, signum, frame)

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
                assert self._listening is not None  # made by ensure_started, before this reader
                self._listening.set()
                self._listened = True
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
                if self._listening is not None:
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

        since = time.time()
        while True:
            await asyncio.sleep(EMBEDDED_POLL_SECONDS)
            if not self._connected:
                since = time.time()
                continue
            started = time.time()
            try:
                # a change commits a moment after its updated_at is taken
                updates = await database_sync_to_async(_changed_since)(since - 2.0)
            except Exception:
                logger.warning("could not read changed tasks from the database", exc_info=True)
                continue
            since = started
            if updates:
                self.dispatch_many(updates)

    async def _repair_gap(self, since: float) -> None:
        """Re-send what changed while the subscription was down, from the database."""
        from channels.db import database_sync_to_async

        updates = await database_sync_to_async(_changed_since)(since - GAP_LOOKBACK_SECONDS)
        self.dispatch_many(updates)
        logger.info("updates subscription restored; re-sent %d changed tasks", len(updates))


hub = Hub()
