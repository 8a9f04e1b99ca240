"""Which service function reacts to which consumed event, and the referral service's one consumer.

- `placematch.matching` `referral-matched`: who is invited; `shortlist-ranked`: the current ranking.
- `placematch.enrolment` `provider-suspended` / `provider-reinstated`: the providers' standing.
- `placematch.placement` `award-collapsed`: the award collapsed before the start; the next offer
  is awarded or the referral reopens (`service.on_award_collapsed`, which appends to the referral).
- `placematch.audit` and `placematch.notifications`: decision records, notification requests and
  delivery outcomes about a referral are kept whole for its evidence pack (`GET /referrals/{id}/audit`).

Unknown event types are ignored.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

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

Command = Callable[[ServiceRuntime, AsyncConnection, Envelope], Awaitable[None]]

COMMANDS: dict[str, Command] = {
    # placematch.placement
    "award-collapsed": service.on_award_collapsed,
}
"""Reactions that record the referral's own events (not only read models). Replay does not run
them: what they recorded is in the referral's stream, from which replay rebuilds the views."""


async def react(conn: AsyncConnection, event: Envelope) -> None:
    """The consumer's handler (and replay's): the reactions to `event`, in the consumer's transaction."""
    await service.keep_for_audit(conn, event)
    reaction = REACTIONS.get(event.type)
    if reaction is not None:
        await reaction(conn, event)


async def react_live(runtime: ServiceRuntime, conn: AsyncConnection, event: Envelope) -> None:
    """The live consumer's handler: `react`, then the command reactions (`COMMANDS`)."""
    await react(conn, event)
    command = COMMANDS.get(event.type)
    if command is not None:
        await command(runtime, conn, event)


def consumers(runtime: ServiceRuntime) -> list[ConsumerSpec]:
    # ~25 consumed events per referral (invitations, shortlists, audit and notification records), all but
    # a collapsed award's without an append: a backlog is worked off 20 events a transaction
    return [ConsumerSpec(["matching", "enrolment", "audit", "notifications", "placement"],
                         partial(react_live, runtime), batch_size=20)]
