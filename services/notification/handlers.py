"""Which service function reacts to which consumed event, and notification's one consumer."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.consumers import reactor
from shared.errors import RuleViolation
from shared.events import Envelope
from shared.service import ConsumerSpec, ServiceRuntime

from . import service
from .service import NotificationRuntime

Reaction = Callable[[NotificationRuntime, AsyncConnection, Envelope], Awaitable[None]]

REACTIONS: dict[str, Reaction] = {
    # placematch.notifications
    "notification-requested": service.on_notification_requested,
}
"""Other event types on this topic do not concern notification."""


def _malformed(event: Envelope, bad: RuleViolation) -> str:
    return f"malformed {event.type} {event.id}: {bad.detail}"


react = reactor(REACTIONS, poison=(RuleViolation,), reason=_malformed)
"""The consumer's handler: the reaction to `event`, in the consumer's transaction. A malformed request
never gets better on retry: straight to the dead-letter topic."""


def consumers(runtime: ServiceRuntime) -> list[ConsumerSpec]:
    assert isinstance(runtime, NotificationRuntime)
    # a backlog of requests is scheduled 20 a transaction (the dispatcher records outcomes in
    # batches too, so it is not starved of the append lock these transactions hold); the
    # dispatcher is woken once they are committed, when the deliveries they schedule are due
    return [ConsumerSpec(["notifications"], partial(react, runtime), batch_size=20,
                         on_commit=runtime.wake_dispatcher)]
