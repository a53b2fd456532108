"""The base of this project's middleware: sync or async as the chain around it is.

Django adapts a sync-only middleware under ASGI with a thread hop per request;
one that can run both ways takes none. A subclass writes ``handle`` (the sync
chain) and ``__acall__`` (the async one); this module imports nothing of the
project, so any module (``tasks.metrics`` too) may build on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction


class HybridMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return self.handle(request)

    def handle(self, request: Any) -> Any:
        raise NotImplementedError

    async def __acall__(self, request: Any) -> Any:
        raise NotImplementedError
