"""Which service function reacts to which consumed event, and matching's one consumer."""
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
    # placematch.enrolment
    "provider-approved": service.on_provider_approved,
    "provider-reinstated": service.on_provider_approved,
    "provider-updated": service.on_provider_updated,
    "provider-suspended": service.on_provider_suspended,
    "provider-rescored": service.on_provider_rescored,
    "provider-rejected": service.on_provider_rejected,
    "provider-vacancies-changed": service.on_provider_vacancies_changed,
    # placematch.referral
    "referral-raised": service.on_referral_raised,
    "referral-amended": service.on_referral_amended,
    "referral-withdrawn": service.on_referral_withdrawn,
    "offer-submitted": service.on_offer_submitted,
    "offer-withdrawn": service.on_offer_withdrawn,
    "invitation-declined": service.on_invitation_declined,
    "placement-awarded": service.on_placement_awarded,
    "referral-closed": service.on_referral_closed,
    "award-revoked": service.on_award_revoked,
    "referral-reopened": service.on_referral_reopened,
}
"""Other event types on these topics do not concern matching."""


react = reactor(REACTIONS)
"""The consumer's handler (and replay's): the reaction to `event`, in the consumer's transaction.
Malformed data never gets better on retry: straight to the dead-letter topic (`shared.consumers.reactor`)."""


def consumers(runtime: ServiceRuntime) -> list[ConsumerSpec]:
    # matching's consumer is its only steady writer: a backlog is worked off 20 events a transaction
    return [ConsumerSpec(["enrolment", "referral"], partial(react, runtime), batch_size=20)]
