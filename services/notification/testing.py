"""Test doubles with real sockets: a webhook receiver (HTTP) and a mail catcher (SMTP).

The receiver is what a provider's portal does: it verifies every request with the
`standardwebhooks` package's own verifier and answers from a script (e.g. 500, 503, then 200).
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, AsyncIterator, Iterator

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    headers: dict[str, str]
    body: str
    verified: bool
    payload: Any
    answered: int


@dataclass
class WebhookReceiver:
    """Answers each request with the next scripted `(status, headers)`, then `default`."""

    secret: str | None = None
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    default: int = 200
    requests: list[Received] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    """Seconds to stall before answering, one per request (a slow portal)."""
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/placematch"

    def answer(self, *statuses: int | tuple[int, dict[str, str]]) -> None:
        self.script = [s if isinstance(s, tuple) else (s, {}) for s in statuses]

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.answered < 300]

    async def _handle(self, request: Request) -> Response:
        body = (await request.body()).decode()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified, payload = False, None
        if self.secret:
            try:
                payload = Webhook(self.secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        status, extra = self.script.pop(0) if self.script else (self.default, {})
        if self.secret and not verified:
            status, extra = 401, {}
        self.requests.append(Received(headers, body, verified, payload, status))
        return Response(status_code=status, headers=extra)


@contextlib.asynccontextmanager
async def run_receiver(receiver: WebhookReceiver) -> AsyncIterator[WebhookReceiver]:
    """Serve `receiver` on 127.0.0.1 (a free port) inside the running event loop."""
    app = Starlette(routes=[Route("/hooks/placematch", receiver._handle, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    receiver.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield receiver
    finally:
        server.should_exit = True
        await task
        sock.close()


class MailCatcher:
    """An aiosmtpd server in a thread; `messages` holds what it received, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content, policy=policy.default))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


@contextlib.contextmanager
def run_mail_catcher() -> Iterator[MailCatcher]:
    from aiosmtpd.controller import Controller

    catcher = MailCatcher()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        catcher.port = probe.getsockname()[1]
    controller = Controller(catcher, hostname="127.0.0.1", port=catcher.port)
    controller.start()
    try:
        yield catcher
    finally:
        controller.stop()
