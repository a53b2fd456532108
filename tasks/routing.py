"""The WebSocket application: one path, checked before anything else runs.

Channels' ``URLRouter`` answers an unknown path with a ``ValueError`` (an HTTP
500 and a traceback in the log) and copies the scope, which every idle
connection keeps; one path needs neither.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from channels.security.websocket import WebsocketDenier

from .auth.websocket import websocket_security
from .consumers import TaskStatusConsumer

logger = logging.getLogger(__name__)

WEBSOCKET_PATH = re.compile(r"/ws/task-status/?")


class OnePath:
    """Runs ``inner`` for ``WEBSOCKET_PATH``; refuses any other path at the handshake (403)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        if WEBSOCKET_PATH.fullmatch(scope.get("path", "")):
            return await self.inner(scope, receive, send)
        logger.info("WebSocket handshake refused: no endpoint at %r", scope.get("path", "")[:200])
        return await WebsocketDenier()(scope, receive, send)


def websocket_application() -> Any:
    return OnePath(websocket_security(TaskStatusConsumer.as_asgi()))
