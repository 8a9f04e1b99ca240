"""Which service function reacts to which consumed event, and the placement service's one consumer."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.consumers import reactor
from shared.events import Envelope
from shared.service import ConsumerSpec, ServiceRuntime

from . import service
from .service import Recorder

Reaction = Callable[[Recorder, AsyncConnection, Envelope], Awaitable[None]]

REACTIONS: dict[str, Reaction] = {
    # placematch.referral
    "referral-raised": service.on_referral_raised,
    "referral-amended": service.on_referral_amended,
    "placement-awarded": service.on_placement_awarded,
    # placematch.matching
    "shortlist-ranked": service.on_shortlist_ranked,
}
"""Other event types on these topics do not concern placements."""

TOPICS = ("referral", "matching")


react = reactor(REACTIONS)
"""The consumer's handler (and replay's): the reaction to `event`, in the consumer's transaction.
Malformed data never gets better on retry: straight to the dead-letter topic (`shared.consumers.reactor`)."""


def consumers(runtime: ServiceRuntime) -> list[ConsumerSpec]:
    return [ConsumerSpec(list(TOPICS), partial(react, runtime), batch_size=20)]
