"""Which service function reacts to which consumed event, and the placement service's one consumer."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.consumers import PoisonEvent
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


async def react(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    """The consumer's handler (and replay's): the reaction to `event`, in the consumer's transaction."""
    reaction = REACTIONS.get(event.type)
    if reaction is None:
        return
    try:
        await reaction(runtime, conn, event)
    except (KeyError, TypeError, ValueError, ArithmeticError) as error:
        # malformed data never gets better on retry: straight to the dead-letter topic
        raise PoisonEvent(f"{event.type} {event.id}: unusable data ({error!r})") from error


def consumers(runtime: ServiceRuntime) -> list[ConsumerSpec]:
    return [ConsumerSpec(list(TOPICS), partial(react, runtime), batch_size=20)]
