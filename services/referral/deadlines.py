"""The deadline closer: referrals whose `offer_deadline` passed with no offer are closed unfilled.

Reliable across restarts because it keeps no state of its own: every pass asks the read model
which open referrals are past their deadline without a standing offer, so a referral whose
deadline passed while the service was down is closed on the first pass after start-up. Each close
re-checks the rule on the freshly loaded aggregate in the append's transaction, so two instances
or a racing offer can never produce a wrong or a second `referral-closed`.
"""
from __future__ import annotations

import asyncio
from datetime import datetime

from shared import context
from shared.errors import DomainError
from shared.logs import get_logger
from shared.service import ServiceRuntime
from shared.vocabulary import now_utc

from . import service
from .settings import ReferralSettings

log = get_logger("placematch.referral.deadlines")
ACTOR = "system:referral"


async def close_due(runtime: ServiceRuntime, now: datetime) -> list[str]:
    """One pass: close every referral due at `now`; returns the ids closed."""
    closed: list[str] = []
    for referral_id in await service.due_for_closing(runtime, now=now):
        try:
            if await service.close_unfilled(runtime, referral_id=referral_id, now=now):
                closed.append(referral_id)
        except DomainError as exc:  # an offer or the borough got there first
            log.info("referral no longer due for closing", referral_id=referral_id, reason=exc.detail)
    if closed:
        log.info("closed unfilled referrals", count=len(closed), referral_ids=closed)
    return closed


async def close_passed_deadlines(runtime: ServiceRuntime) -> None:
    """Background task (ServiceRuntime `tasks`): a pass at start-up, then every few seconds."""
    context.actor.set(ACTOR)
    every = ReferralSettings.of(runtime.settings).deadline_check_seconds
    while True:
        await close_due(runtime, now_utc())
        await asyncio.sleep(every)
