"""What the referral service does with the events it consumes.

- `placematch.matching` `referral-matched`: who is invited (cumulative), so invited providers
  may offer and everyone else gets 403; `shortlist-ranked`: the ranking an award is judged against.
- `placematch.enrolment` `provider-suspended` / `provider-reinstated`: a suspended provider may
  not offer and may not be awarded.

- `placematch.audit` and `placematch.notifications`: decision records, notification requests and
  delivery outcomes about a referral are kept whole for its evidence pack (`GET /referrals/{id}/audit`).

Decisions use the event's own `time`, never the wall clock, so a replay gives the same tables.
Unknown event types are ignored.
"""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from services.referral import projections
from shared.consumers import PoisonEvent
from shared.events import Envelope


async def handle(conn: AsyncConnection, event: Envelope) -> None:
    data = event.data
    await projections.record_for_audit(conn, event)
    match event.type:
        case "referral-matched":
            referral_id = data.get("referral_id") or event.subject
            invited = data.get("invited")
            if not referral_id or not isinstance(invited, list):
                raise PoisonEvent(f"referral-matched {event.id} lacks referral_id or invited")
            await projections.record_match(conn, referral_id, data.get("borough"), [str(p) for p in invited],
                                           event.time)
        case "shortlist-ranked":
            referral_id = data.get("referral_id") or event.subject
            entries = data.get("entries")
            if not referral_id or not isinstance(entries, list):
                raise PoisonEvent(f"shortlist-ranked {event.id} lacks referral_id or entries")
            await projections.record_shortlist(conn, referral_id, data.get("policy_version"), entries,
                                               data.get("excluded") or [], event.time)
        case "provider-suspended":
            await projections.record_standing(conn, event.subject, True, data.get("reason"), event.time)
        case "provider-reinstated":
            await projections.record_standing(conn, event.subject, False, None, event.time)
        case _:
            return
