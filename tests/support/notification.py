"""Test support for notification: doubles with real sockets — a webhook receiver (HTTP) and a mail
catcher (SMTP) — and builders of its domain objects for the unit tests.

The receiver is what a provider's portal does: it verifies every request with the
`standardwebhooks` package's own verifier and answers from a script (e.g. 500, 503, then 200).
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.notification.deliveries import Delivery
from services.notification.domain import Channel, Owner
from services.notification.planning import parse_request, plan_deliveries
from services.notification.retries import AttemptOutcome, classify_http
from services.notification.subscriptions import Subscription
from shared.vocabulary import NotificationRequest


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


# --- builders of the domain's objects, for the unit tests -------------------------------------------

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
PROVIDER = Owner("provider", "prov-1")
OTHER_PROVIDER = Owner("provider", "prov-2")
URL = "https://portal.example/hooks/placematch"


def new_subscription(
    id: str = "sub-1", owner: Owner = PROVIDER, event_types: list[str] | None = None, url: str = URL
) -> Subscription:
    events = Subscription.create(
        id,
        owner=owner,
        url=url,
        event_types=event_types or ["referral.invited"],
        secret_id="secret-1",
        at=T0,
        allow_private=False,
    )
    return Subscription(id).mutate(events)


def request(**overrides: object) -> NotificationRequest:
    data = {
        "notification_id": "n-1",
        "webhook_type": "referral.invited",
        "recipient": {"role": "provider", "tenant": "prov-1"},
        "email": "admissions@riverside.example",
        "referral_id": "r-1",
        "data": {"referral_id": "r-1", "age_at_start": 12, "district": "Croydon"},
    }
    data.update(overrides)
    return parse_request(data)


def scheduled_delivery(channel: Channel = Channel.WEBHOOK) -> Delivery:
    planned = plan_deliveries(request(), [new_subscription()] if channel is Channel.WEBHOOK else [])[0]
    return Delivery("d-1").mutate(Delivery.schedule("d-1", request=request(), planned=planned, at=T0))


def outcome(code: int | None, at: datetime = T0, retry_after: timedelta | None = None) -> AttemptOutcome:
    return AttemptOutcome(
        attempted_at=at,
        status_code=code,
        latency_ms=12,
        result=classify_http(code),
        error=None if code else "timeout",
        retry_after=retry_after,
    )
