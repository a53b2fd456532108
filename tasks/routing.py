"""The WebSocket application: one path, checked before anything else runs.

Channels' ``URLRouter`` answers an unknown path with a ``ValueError`` (an HTTP
500 and a traceback in the log) and copies the scope, which every idle
connection keeps; one path needs neither.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable
from typing import Any

from channels.security.websocket import WebsocketDenier

from .auth.websocket import WebsocketGate
from .consumers import TaskStatusConsumer

logger = logging.getLogger(__name__)

WEBSOCKET_PATH = re.compile(r"/ws/task-status/?")


class OnePath:
    """Runs ``inner`` for ``WEBSOCKET_PATH``; refuses any other path at the handshake (403).

    A plain function that returns ``inner``'s coroutine rather than awaiting it,
    so that no frame of its own stays suspended for the life of a connection.
    """

    _asgi_single_callable = True  # asgiref: an ASGI 3 application, although not ``async def``

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, scope: dict, receive: Any, send: Any) -> Awaitable[Any]:
        if WEBSOCKET_PATH.fullmatch(scope.get("path", "")):
            return self.inner(scope, receive, send)
        logger.info("WebSocket handshake refused: no endpoint at %r", scope.get("path", "")[:200])
        return WebsocketDenier()(scope, receive, send)


def websocket_application() -> Any:
    return OnePath(WebsocketGate(TaskStatusConsumer))
