"""A real SMTP server on loopback (aiosmtpd) that records what it accepts.

Recipients at ``refused.example.com`` are refused with 550 at RCPT. It can be told
to misbehave for the next N messages, at DATA: ``drop(n)`` closes the connection
without an answer (the message is not accepted), ``tempfail(n)`` answers 451,
``slow(seconds)`` answers every message late; ``on_accept`` (if set) is called
with each accepted message's number before the server answers 250. Started with ``tls`` it requires
STARTTLS before anything else, and with ``login`` authentication (over TLS only),
as a production relay does; each message records whether both were in place.
"""

from __future__ import annotations

import asyncio
import email
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.servers import free_port
from tests.support.tls import LoopbackCertificate

REFUSED_DOMAIN = "refused.example.com"


@dataclass(frozen=True)
class Received:
    """One accepted message: the envelope and the raw bytes as they came."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls: bool = False
    login: str = ""

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=default)  # type: ignore[return-value]


class RecordingHandler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refused: list[str] = []
        self.data_commands = 0
        self.dropped = 0
        self.tempfailed = 0
        self._drop_next = 0
        self._tempfail_next = 0
        self.delay = 0.0
        self.on_accept: Callable[[int], None] | None = None
        self.lock = threading.Lock()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower().rpartition("@")[2] == REFUSED_DOMAIN:
            with self.lock:
                self.refused.append(address)
            return "550 5.1.1 Recipient address rejected"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.data_commands += 1
            drop = self._drop_next > 0
            tempfail = not drop and self._tempfail_next > 0
            if drop:
                self._drop_next -= 1
                self.dropped += 1
            elif tempfail:
                self._tempfail_next -= 1
                self.tempfailed += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if drop:
            server.transport.close()  # no answer: the client sees the connection go
            return "421 4.4.2 Connection dropped"
        if tempfail:
            return "451 4.3.0 Try again later"
        with self.lock:
            self.received.append(
                Received(
                    envelope.mail_from,
                    tuple(envelope.rcpt_tos),
                    bytes(envelope.original_content or envelope.content),
                    tls=session.ssl is not None,
                    login=(session.auth_data.login or b"").decode() if session.auth_data else "",
                )
            )
            count = len(self.received)
        if self.on_accept is not None:
            self.on_accept(count)
        return "250 OK"


class SmtpServer:
    def __init__(self, controller: Controller, handler: RecordingHandler) -> None:
        self.controller = controller
        self.handler = handler
        self.host = controller.hostname
        self.port = controller.port

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def drop(self, n: int = 1) -> None:
        with self.handler.lock:
            self.handler._drop_next += n

    def tempfail(self, n: int = 1) -> None:
        with self.handler.lock:
            self.handler._tempfail_next += n

    def slow(self, seconds: float) -> None:
        self.handler.delay = seconds

    def configure(
        self, settings: Any, *, rate: float = 1000, backoff: float = 0.01, retries: int = 3
    ) -> None:
        """Point Django (pytest-django's ``settings``) at this server, fast retries."""
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = self.host
        settings.EMAIL_PORT = self.port
        settings.EMAIL_HOST_USER = ""
        settings.EMAIL_HOST_PASSWORD = ""
        settings.EMAIL_USE_TLS = False
        settings.EMAIL_USE_SSL = False
        settings.EMAIL_TIMEOUT = 10
        settings.EMAIL_RATE_PER_SECOND = rate
        settings.EMAIL_BACKOFF_SECONDS = backoff
        settings.EMAIL_MAX_RETRIES = retries


def _authenticator(user: str, password: str) -> Any:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        good = isinstance(data, LoginPassword) and (data.login, data.password) == (
            user.encode(),
            password.encode(),
        )
        return AuthResult(success=good, handled=False, auth_data=data if good else None)

    return check


@contextmanager
def smtp_server(
    *, tls: LoopbackCertificate | None = None, login: tuple[str, str] | None = None
) -> Iterator[SmtpServer]:
    handler = RecordingHandler()
    options: dict[str, Any] = {}
    if tls is not None:
        options.update(tls_context=tls.server_context(), require_starttls=True)
    if login is not None:
        options.update(authenticator=_authenticator(*login), auth_required=True)
    controller = Controller(
        handler, hostname="127.0.0.1", port=free_port(), ready_timeout=10, **options
    )
    controller.start()
    try:
        yield SmtpServer(controller, handler)
    finally:
        controller.stop()
