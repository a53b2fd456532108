"""The WebSocket endpoint: a thin protocol adapter between a client and the hub.

Frames in, subscriptions and catch-up out; the live path itself (wire format,
publishing, the hub, the socket writer) is ``tasks.live``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import InterfaceError, OperationalError

from . import metrics
from .auth.permissions import can_read, hidden_operations
from .live import routes, wire
from .live.catchup import shared_reads
from .live.delivery import ClientGone, Delivery
from .live.hub import hub
from .live.wire import Update
from .models import Operation, quoted, unknown_operation
from .selectors import changed_since

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
# A dependency (the database) is down: reconnect with backoff. 1013 is the standard
# code, but daphne lets an application close only with 1000 or 4000-4999.
CLOSE_TRY_AGAIN_LATER = 4503

# How long after a catch-up a late live copy of what it sent is still dropped.
# The tracker publishes after its commit, so a catch-up can read a change from
# the database before that change's PUBLISH reaches this process.
_LATE_PUBLISH_SECONDS = 30.0


# What the subscription actions take: a misspelt filter must be an error, not
# a quiet subscription to everything. (A ping may carry anything.)
_FIELDS = {
    "subscribe": {"action", "operation", "task_id", "since"},
    "unsubscribe": {"action", "operation", "task_id"},
}


# Interned ``hidden`` sets: a handful of distinct values across all connections.
_HIDDEN_SETS: dict[frozenset[str], frozenset[str]] = {}


class FrameError(ValueError):
    """A client frame the server cannot take; answered with an ``error`` message."""


def _subscription_of(
    message: dict, hidden: frozenset[str] = frozenset()
) -> tuple[tuple[str, str], dict]:
    operation = message.get("operation")
    task_id = message.get("task_id")
    if operation is not None and task_id is not None:
        raise FrameError("give operation or task_id, not both")
    if operation is not None:
        if not isinstance(operation, str) or operation not in Operation.values:
            raise FrameError(unknown_operation(operation))
        if operation in hidden:
            raise FrameError(
                f"{operation} handles personal data: watching it needs its reader role"
            )
        return routes.operation_key(operation), {"operation": operation}
    if task_id is not None:
        try:
            normalized = str(uuid.UUID(task_id)) if isinstance(task_id, str) else None
        except ValueError:
            normalized = None
        if normalized is None:
            raise FrameError(f"task_id must be a UUID string, got {quoted(task_id)}")
        return routes.task_key(normalized), {"task_id": normalized}
    return routes.ALL, {}


def newer_than_floor(floor: dict[str, int], update: Update) -> bool:
    """False for a late live copy of a version a catch-up already sent.

    ``floor`` maps task_id to the version the catch-up sent. A task is
    forgotten once a newer version passes, since the hub's stream only rises
    per task from then on.
    """
    sent = floor.get(update.task_id)
    if sent is None:
        return True
    if update.version <= sent:
        return False
    del floor[update.task_id]
    return True


def forget_settled(floor: dict[str, int], sent: list[Update]) -> None:
    """Drop from ``floor`` the tasks of ``sent`` whose change is too old to have a copy on the way.

    Only a change committed moments ago can still have its live copy in flight;
    a storm's catch-up of thousands of older tasks need not be remembered per
    client for ``_LATE_PUBLISH_SECONDS``.
    """
    for update in sent:
        if (
            floor.get(update.task_id) == update.version
            and (wire.age(update) or 0.0) > _LATE_PUBLISH_SECONDS
        ):
            del floor[update.task_id]


def _since_of(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise FrameError("since must be Unix seconds (a number)") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FrameError("since must be Unix seconds (a number)")
    try:
        value = float(value)  # an int too large for a float raises here, not in isfinite
    except OverflowError:
        raise FrameError("since is out of range") from None
    if not math.isfinite(value):
        raise FrameError("since must be Unix seconds (a number)")
    if value < 0:
        raise FrameError("since must not be negative")
    return float(value)


class TaskStatusConsumer(AsyncWebsocketConsumer):
    """Subscriptions, catch-up and heartbeats for one client.

    To the hub it is a ``tasks.live.delivery.Client``: live updates do not pass
    through this consumer's channel-layer queue, the hub calls ``deliver`` with
    the already-encoded frame and ``self.delivery`` writes it to the socket. Nor does anything
    else, so the consumer takes no channel layer: one would cost every
    connection a receive task and a queue, and Redis a poll, for nothing.
    """

    channel_layer_alias = "no channel layer: updates come through the hub"
    groups: tuple[str, ...] = ()  # Channels would give every connection an empty list

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Channels' loop for a consumer without a channel layer, minus its extra task.

        ``await_many_dispatch`` runs each receive in a task of its own and waits
        on it; with one source that is a task, a future and their callbacks
        per connection for nothing, and 5,000 idle connections should be cheap.
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            await self.dispatch(await receive())  # websocket.connect
            delivery = getattr(self, "delivery", None)
            if delivery is not None:
                delivery.release_handshake(scope, receive)
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            # However the loop ended (a disconnect, a server error), the hub
            # must not keep routing to this client.
            self._forget()

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch without its ``close_old_connections`` thread hop per frame.

        A handshake or a ping touches no database; every read here goes through
        ``database_sync_to_async``, which closes stale connections itself.
        """
        kind = message.get("type")
        if kind == "websocket.receive":
            await self.websocket_receive(message)
        elif kind == "websocket.connect":
            await self.websocket_connect(message)
        elif kind == "websocket.disconnect":
            await self.disconnect(message.get("code", 1005))
            raise StopConsumer()
        else:
            raise ValueError(f"No handler for message type {kind!r}")

    async def connect(self) -> None:
        self.subscriptions: set[tuple[str, str]] = set()
        # Personal-data operations this client may not see: never delivered nor caught up.
        self.hidden: frozenset[str] = frozenset()
        self.delivery = Delivery(self.scope.get("server_send", self.base_send), self._close_with)
        self._catchup: list[Update] | None = None
        # task_id -> the version a catch-up sent, while late live copies may come
        self._floor: dict[str, int] | None = None
        self._floor_timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        await self.accept()
        metrics.WS_OPENED.inc()
        metrics.WS_OPEN.inc()
        self._close_code: Any = "open"  # counted as closed once, with its code (_forget)
        if self.scope.get("dependency_error"):
            await self.close(code=CLOSE_TRY_AGAIN_LATER)
            return
        identity = self.scope.get("identity")
        if identity is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not can_read(identity.user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        try:
            if identity.by_token:  # the token's roles decide: no database
                hidden = hidden_operations(identity.user, identity)
            else:
                hidden = await database_sync_to_async(hidden_operations)(identity.user, identity)
        except (OperationalError, InterfaceError):
            await self.close(code=CLOSE_TRY_AGAIN_LATER)
            return
        # one set per distinct answer in the process, not one per connection
        self.hidden = _HIDDEN_SETS.setdefault(hidden, hidden)
        if identity.expires_at is not None:
            delay = max(0.0, identity.expires_at - time.time())
            self._expiry = asyncio.get_running_loop().call_later(
                delay, lambda: asyncio.ensure_future(self._close_with(CLOSE_UNAUTHENTICATED))
            )
        hub.ensure_started()
        hub.connect(self)
        try:
            await self._subscribe_from_url()
        except (OperationalError, InterfaceError):
            # A reconnect with ?since= catches up from the database: none, try later.
            await self._close_with(CLOSE_TRY_AGAIN_LATER)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "_close_code", None) == "open":
            self._close_code = code
        self._forget()

    def _forget(self) -> None:
        code = getattr(self, "_close_code", None)
        if code is not None:
            self._close_code = None
            metrics.WS_OPEN.dec()
            metrics.WS_CLOSED.labels(
                metrics.close_code_label(None if code == "open" else code)
            ).inc()
        if getattr(self, "delivery", None) is not None:
            self.delivery.closed = True
        for timer in (getattr(self, "_expiry", None), getattr(self, "_floor_timer", None)):
            if timer is not None:
                timer.cancel()
        for key in getattr(self, "subscriptions", ()):
            hub.discard(self, key)
        hub.disconnect(self)

    def shut_down(self, code: int) -> None:
        """The server is stopping: tell the client to reconnect elsewhere."""
        asyncio.ensure_future(self._close_with(code))

    async def _close_with(self, code: int) -> None:
        self.delivery.closed = True
        for key in self.subscriptions:
            hub.discard(self, key)
        await self.close(code=code)

    # -- incoming frames ---------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            if text_data is None:
                raise FrameError("binary frames are not supported; send JSON text")
            try:
                message = json.loads(text_data)
            except ValueError:
                raise FrameError("frame is not valid JSON") from None
            except RecursionError:
                raise FrameError("frame is nested too deeply") from None
            if not isinstance(message, dict):
                raise FrameError("frame must be a JSON object with an action")
            action = message.get("action")
            handler = (
                {
                    "subscribe": self.action_subscribe,
                    "unsubscribe": self.action_unsubscribe,
                    "ping": self.action_ping,
                }.get(action)
                if isinstance(action, str)
                else None
            )
            if handler is None or not isinstance(action, str):  # a handler: a str action
                raise FrameError(
                    f"unknown action {quoted(action)}; valid: subscribe, unsubscribe, ping"
                )
            unknown = sorted(set(message) - _FIELDS[action]) if action in _FIELDS else []
            if unknown:
                raise FrameError(
                    f"unknown field {', '.join(map(repr, unknown))} for {action}; "
                    f"valid: {', '.join(sorted(_FIELDS[action] - {'action'}))}"
                )
            await handler(message)
        except FrameError as exc:
            await self._send_json({"type": "error", "error": str(exc)})
        except (OperationalError, InterfaceError):
            await self._send_json(
                {"type": "error", "error": "the database is unavailable; try again later"}
            )
        except Exception:  # no frame, however hostile, raises out of the consumer
            logger.exception("a WebSocket frame could not be handled")
            await self._send_json(
                {
                    "type": "error",
                    "error": "the server could not take this frame; it was not applied",
                }
            )

    async def action_ping(self, message: dict) -> None:
        await self._send_json({"type": "pong"})

    async def action_subscribe(self, message: dict) -> None:
        key, described = _subscription_of(message, self.hidden)
        since = _since_of(message.get("since"))
        await self._subscribe(key, described, since)

    async def action_unsubscribe(self, message: dict) -> None:
        key, described = _subscription_of(message)
        if key in self.subscriptions:
            self.subscriptions.discard(key)
            hub.discard(self, key)
        await self._send_json({"type": "unsubscribed", "subscription": described})

    # -- subscriptions -----------------------------------------------------

    async def _subscribe_from_url(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        wanted = [{"operation": op} for op in query.get("operation", [])]
        wanted += [{"task_id": task_id} for task_id in query.get("task_id", [])]
        try:
            since = _since_of(query["since"][-1]) if "since" in query else None
        except FrameError as exc:
            await self._send_json({"type": "error", "error": str(exc)})
            since = None
        if not wanted:
            wanted = [{}]
        for message in wanted:
            try:
                key, described = _subscription_of(message, self.hidden)
                await self._subscribe(key, described, since)
            except FrameError as exc:
                await self._send_json({"type": "error", "error": str(exc)})

    async def _subscribe(self, key: tuple[str, str], described: dict, since: float | None) -> None:
        if (
            key not in self.subscriptions
            and len(self.subscriptions) >= settings.WS_MAX_SUBSCRIPTIONS
        ):
            raise FrameError(
                f"at most {settings.WS_MAX_SUBSCRIPTIONS} subscriptions per connection"
            )
        if since is not None:
            self._catchup = []
        self.subscriptions.add(key)
        hub.add(self, key)
        # "subscribed" means live, even on a process whose hub has just started
        await hub.first_listened()
        reply = dict(described)
        if since is not None:
            reply["since"] = int(since) if since.is_integer() else since
        await self._send_json({"type": "subscribed", "subscription": reply})
        if since is not None:
            await self._catch_up(key, since)

    async def _catch_up(self, key: tuple[str, str], since: float) -> None:
        """Current state first, then the live updates buffered meanwhile, never older.

        A subscription to everything shares its read with the other clients
        catching up at the same moment (``tasks.live.catchup``); the rows come
        encoded once, and go out with the buffered updates in one write.
        """
        kind, value = key
        try:
            await hub.listening()
            if kind == routes.ALL[0]:
                found = await shared_reads.everything_since(since)
                if self.hidden:
                    found = [update for update in found if update.operation not in self.hidden]
            else:
                tasks = await database_sync_to_async(changed_since)(
                    since,
                    operations=[value] if kind == "operation" else [],
                    task_ids=[value] if kind == "task" else [],
                    hidden=self.hidden,
                )
                found = [wire.encode(task) for task in tasks]
        finally:
            buffered, self._catchup = self._catchup or [], None
        sent = self._floor if self._floor is not None else {}
        out = []
        for update in found + buffered:
            if update.version > sent.get(update.task_id, 0):
                sent[update.task_id] = update.version
                out.append(update)
        if out:
            self.delivery.offer_many(out, None)
        # Only a change committed moments ago can still have its live copy on the
        # way; the floor need not remember the others (a storm's catch-up of
        # thousands of tasks would otherwise be held per client for that long).
        for update in out:
            if (
                sent.get(update.task_id) == update.version
                and (wire.age(update) or 0.0) > _LATE_PUBLISH_SECONDS
            ):
                del sent[update.task_id]
        self._hold_floor(sent)

    def _hold_floor(self, sent: dict[str, int]) -> None:
        """Drop live copies of what the catch-up sent until they can no longer come."""
        if self._floor_timer is not None:
            self._floor_timer.cancel()
            self._floor_timer = None
        self._floor = sent or None
        if self._floor is not None:
            self._floor_timer = asyncio.get_running_loop().call_later(
                _LATE_PUBLISH_SECONDS, self._hold_floor, {}
            )

    def deliver(self, update: Update) -> None:
        """Called by the hub, on this process's loop, for each update this client wants."""
        if update.operation in self.hidden:
            return
        if self._catchup is not None:
            self._catchup.append(update)
        elif self._floor is None or newer_than_floor(self._floor, update):
            self.delivery.offer(update)

    def deliver_many(self, updates: list[Update], blob: bytes | None) -> None:
        """Several updates at once; ``blob`` is their frames joined, when the hub has it."""
        if self.hidden and any(update.operation in self.hidden for update in updates):
            updates = [update for update in updates if update.operation not in self.hidden]
            blob = None
            if not updates:
                return
        if self._catchup is not None:
            self._catchup.extend(updates)
            return
        if self._floor is not None:
            floor = self._floor
            newer = [update for update in updates if newer_than_floor(floor, update)]
            if len(newer) != len(updates):
                updates, blob = newer, None
        if updates:
            self.delivery.offer_many(updates, blob)

    async def _send_json(self, message: dict) -> None:
        if self.delivery.closed:
            return
        try:
            await self.send(text_data=json.dumps(message, separators=(",", ":")))
        except ClientGone:  # the client left while its frame was handled: no one to answer
            self.delivery.closed = True
