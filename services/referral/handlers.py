"""Which service function reacts to which consumed event, and the referral service's one consumer.

- `placematch.matching` `referral-matched`: who is invited; `shortlist-ranked`: the current ranking.
- `placematch.enrolment` `provider-suspended` / `provider-reinstated`: the providers' standing.
- `placematch.audit` and `placematch.notifications`: decision records, notification requests and
  delivery outcomes about a referral are kept whole for its evidence pack (`GET /referrals/{id}/audit`).

Unknown event types are ignored.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events import Envelope
from shared.service import ConsumerSpec, ServiceRuntime

from . import service

Reaction = Callable[[AsyncConnection, Envelope], Awaitable[None]]

REACTIONS: dict[str, Reaction] = {
    # placematch.matching
    "referral-matched": service.on_referral_matched,
    "shortlist-ranked": service.on_shortlist_ranked,
    # placematch.enrolment
    "provider-suspended": service.on_provider_suspended,
    "provider-reinstated": service.on_provider_reinstated,
}
"""Other event types on these topics only go to the audit trail (`service.keep_for_audit`), if at all."""


async def react(conn: AsyncConnection, event: Envelope) -> None:
    """The consumer's handler (and replay's): the reactions to `event`, in the consumer's transaction."""
    await service.keep_for_audit(conn, event)
    reaction = REACTIONS.get(event.type)
    if reaction is not None:
        await reaction(conn, event)


def consumers(runtime: ServiceRuntime) -> list[ConsumerSpec]:
    # ~25 consumed events per referral (invitations, shortlists, audit and notification records), none
    # of which appends: a backlog is worked off 20 events a transaction
    return [ConsumerSpec(["matching", "enrolment", "audit", "notifications"], react, batch_size=20)]
