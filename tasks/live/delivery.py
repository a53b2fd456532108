"""One client's socket: how an update's frame reaches it, and what the hub may call on it.

``Client`` is what the hub calls on a connection (the consumer implements it);
``Delivery`` sends one client's updates, conflating while its socket is full.

**The one file to check when daphne, Twisted or autobahn is upgraded.** To
write a frame with one ``send()`` instead of a trip through the reactor, this
module reads and sets private state of those libraries; no other module touches
their state (``tasks/auth/redaction.py`` wraps daphne's access log method
``AccessLogGenerator.write_entry``: check it on a daphne upgrade too). Every
such access is in the helpers named ``_daphne_*``, ``_twisted_*`` and
``_autobahn_*`` below, or marked ``# internals:`` where it
sits on the hot path (a call there would cost every client every message):

- daphne: the protocol object is the first argument of the bound ``send`` it
  gives the application (``send.args[0]``, found through ``server_send``,
  which ``tasks.auth.websocket.ServerSendMiddleware`` keeps in the scope).
- autobahn (``WebSocketServerProtocol``): ``sendPreparedMessage`` (recognises
  the protocol), ``failByDrop`` and ``factory.failByDrop`` (turned off),
  ``state``/``STATE_OPEN``, ``send_queue``, ``sendData``,
  ``closeHandshakeTimeout``, ``transport``; and the ``Disconnected`` its
  ``send`` raises once the client has gone (``ClientGone``).
- Twisted: ``twisted.internet.tcp.Connection`` and its ``socket`` and ``TLS``;
  the write buffer ``dataBuffer``, ``offset`` and ``_tempDataLen``;
  ``write`` and ``loseConnection``; ``producer`` and ``unregisterProducer``,
  and the ``HTTPChannel``'s ``requests`` and ``setTimeout`` (released after the
  handshake).
- autobahn's module-level ``pformat``, ``hltype`` and ``hlval``, which its
  WebSocket modules call for debug lines that are never written
  (``_autobahn_lazy_log_arguments``).
- Once a connection is open, what only its handshake needed is let go
  (``Delivery.release_handshake``): autobahn's ``http_request_data``,
  ``http_headers`` and ``http_request_params`` and its ``ConnectionRequest``'s
  ``headers`` and ``params``; daphne's ``clean_headers``; and two parts of
  daphne's per-connection ``asyncio.Queue`` that an unbounded queue never uses
  (``_putters``, ``_finished``) are replaced by shared ones.

Without daphne (Channels' test communicator, another server) none of this is
used: frames go through the ASGI ``send``.
"""

from __future__ import annotations

import asyncio
import logging
import pprint
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from autobahn import util as autobahn_util
from autobahn.exception import Disconnected as ClientGone
from django.conf import settings

from .. import metrics
from .wire import Update

logger = logging.getLogger(__name__)

__all__ = ["CLOSE_SLOW_CLIENT", "Client", "ClientGone", "Delivery"]

CLOSE_SLOW_CLIENT = 4013
# Updates a slow client's backlog replaced by newer ones: a plain int on that slow
# path, read when metrics are scraped (tasks/metrics.py), never a metric call.
client_conflated = 0


class Client(Protocol):
    """What the hub calls on a connection, on this process's event loop.

    None of these may block, and one client's failure is the hub's to contain
    (it closes that client with 1011 and goes on with the others).
    """

    def deliver(self, update: Update) -> None:
        """One update this client's subscriptions match."""

    def deliver_many(self, updates: list[Update], blob: bytes | None) -> None:
        """Several at once, in order; ``blob`` is their frames joined, when the hub has it."""

    def shut_down(self, code: int) -> None:
        """Close this client with ``code`` (4001: the server is stopping; 1011: it failed)."""


# -- daphne, Twisted and autobahn internals --------------------------------------------

# Shared by every connection's queue: an unbounded asyncio.Queue never waits in
# ``put`` (nothing is ever appended to ``_putters``) and nobody ``join``s it.
_NO_PUTTERS: deque = deque()
_NEVER_JOINED = asyncio.Event()


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


def _twisted_plain_socket(transport: Any) -> Any | None:
    """The socket under a plain Twisted TCP transport (not TLS), else None."""
    from twisted.internet import tcp

    if isinstance(transport, tcp.Connection) and not getattr(transport, "TLS", False):
        return getattr(transport, "socket", None)
    return None


def _twisted_buffered_bytes(transport: Any) -> int:
    """Bytes Twisted holds for the socket, not yet accepted by the kernel."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:
        return 0


class _Lazy:
    """A log argument computed only if its line is actually written."""

    __slots__ = ("args", "func")

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func = func
        self.args = args

    def __format__(self, spec: str) -> str:
        return format(str(self.func(*self.args)), spec)

    def __str__(self) -> str:
        return str(self.func(*self.args))


def _lazy_pformat(value: Any, *args: Any, **kwargs: Any) -> Any:
    """autobahn's ``pformat``: lazy for the per-connection configuration debug line only."""
    if sys._getframe(1).f_code.co_name == "_connectionMade" and not args and not kwargs:
        return _Lazy(pprint.pformat, value)
    return pprint.pformat(value, *args, **kwargs)


def _lazy_hltype(obj: Any) -> Any:
    return _Lazy(autobahn_util.hltype, obj)


def _lazy_hlval(val: Any, color: str = "white", bold: bool = True) -> Any:
    return _Lazy(autobahn_util.hlval, val, color, bold)


def _autobahn_lazy_log_arguments() -> None:
    """Stop autobahn formatting debug-log arguments on every connection and frame for nothing.

    Its WebSocket modules compute their debug lines' arguments whether or not
    debug logging is on: ``pformat`` of some 30 settings in ``_connectionMade``
    (about 100 µs a handshake) and coloured names (``hltype``, ``hlval``,
    through click) on every handshake step and every ``sendData``. Each
    becomes a ``_Lazy`` that formats only if a line is written; their only
    other use is a timing report we never turn on, which keeps the real one.
    """
    # Only modules daphne has loaded: importing autobahn's Twisted side elsewhere
    # would switch txaio to Twisted in a process that does not run it.
    for name in ("autobahn.websocket.protocol", "autobahn.twisted.websocket"):
        module = sys.modules.get(name)
        if module is not None:
            names = vars(module)
            names.update(hltype=_lazy_hltype, hlval=_lazy_hlval)
            if "pformat" in names:
                names["pformat"] = _lazy_pformat


_autobahn_lazy_log_arguments()


def _twisted_release_http_channel(transport: Any) -> None:
    """Let go of the HTTP channel that carried the upgrade request.

    Twisted's ``HTTPChannel`` registered itself as the TCP transport's producer
    when the connection was made, and stays so after daphne hands the socket to
    the WebSocket protocol: with its request, parsed headers and idle timer it
    would live as long as the connection, about 3 KiB each.
    """
    channel = getattr(transport, "producer", None)
    if channel is None or not hasattr(channel, "requests"):
        return
    transport.unregisterProducer()
    channel.setTimeout(None)
    channel.requests = []


def _autobahn_forget_handshake(protocol: Any) -> None:
    """Drop the parsed handshake request autobahn and daphne keep (headers, query)."""
    protocol.http_request_data = b""
    protocol.http_headers = {}
    protocol.http_request_params = {}
    protocol.clean_headers = []
    request = getattr(protocol, "request", None)  # daphne logs its path at the close
    if request is not None:
        request.headers = {}
        request.params = {}


def _daphne_slim_queue(receive: Any) -> None:
    """Share the parts of daphne's per-connection input queue an unbounded one never uses."""
    queue = getattr(receive, "__self__", None)
    if isinstance(queue, asyncio.Queue) and queue.maxsize <= 0 and not queue._putters:  # type: ignore[attr-defined]
        queue._putters = _NO_PUTTERS  # type: ignore[attr-defined]
        queue._finished = _NEVER_JOINED  # type: ignore[attr-defined]


def _autobahn_close_after_buffer(protocol: Any) -> None:
    """Let the close handshake wait for what is buffered (no timeout to abort the socket)."""
    protocol.closeHandshakeTimeout = 0


def _twisted_half_close(protocol: Any) -> None:
    """Close the socket once Twisted's buffer has drained (what is queued still goes out)."""
    if protocol.transport is not None:
        protocol.transport.loseConnection()


# -- one client's socket -----------------------------------------------------------------


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

    __slots__ = (
        "_send",
        "_close",
        "_protocol",
        "_socket",
        "_backlog",
        "_replaceable",
        "_backlog_bytes",
        "_drainer",
        "_behind_since",
        "_refused",
        "closed",
    )

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
            self._socket = _twisted_plain_socket(self._protocol.transport)
        # made on first use: most clients never fall behind, and an idle
        # connection should cost as little as possible
        self._backlog: list[list] | None = None
        self._replaceable: dict[str, list] | None = None
        self._backlog_bytes = 0
        self._drainer: asyncio.Task | None = None
        self._behind_since = 0.0
        self._refused = False
        self.closed = False

    def release_handshake(self, scope: dict, receive: Any) -> None:
        """The connection is open: free what only its handshake needed (under daphne).

        The consumer calls this after ``connect``. Nothing later reads the
        request's headers or the rest of the scope, and about 5 KiB a
        connection goes with them.
        """
        protocol = self._protocol
        if protocol is None:
            return
        _twisted_release_http_channel(protocol.transport)
        _autobahn_forget_handshake(protocol)
        # daphne's scope is this connection's own and nothing reads it after the
        # handshake (its headers are daphne's clean_headers, released above)
        scope.clear()
        _daphne_slim_queue(receive)

    def _behind(self) -> bool:
        """The kernel refused part of what we sent and Twisted still holds it.

        Bytes that daphne itself wrote (a ``subscribed`` reply, a pong) also
        wait in Twisted's buffer until the next turn of the loop; that is not
        being behind, and updates then queue after them in order.
        """
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            return False
        buffered = _twisted_buffered_bytes(protocol.transport)
        if buffered == 0:
            self._refused = False
            return False
        return self._refused or buffered > settings.WS_SEND_HIGH_WATER

    def _write(self, data: bytes, text: str | None = None) -> None:
        protocol = self._protocol
        if protocol is None:
            asyncio.ensure_future(self._send({"type": "websocket.send", "text": text}))
            return
        # internals: autobahn's state, its queue and its transport (Twisted), inline
        # because this runs for every client on every message
        transport = protocol.transport
        if protocol.state != protocol.STATE_OPEN or transport is None:
            return
        if protocol.send_queue:
            protocol.sendData(data)  # behind autobahn's own queued frames, in order
            return
        sock = self._socket
        if sock is not None and _twisted_buffered_bytes(transport) == 0:
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
        if self._backlog is None or self._replaceable is None:  # both are, or neither
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
        return self._backlog_bytes + (_twisted_buffered_bytes(transport) if transport else 0)

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
            _autobahn_close_after_buffer(protocol)
        await self._close(CLOSE_SLOW_CLIENT)
        if protocol is not None:
            _twisted_half_close(protocol)
