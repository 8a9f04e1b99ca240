"""The referral service's commands, its reactions to the events it consumes, and its queries.

Each command runs in one transaction through `runtime.command` (shared/commands.py): the referral
is loaded, the facts it needs (invitation, suspensions, the shortlist) are read from the read models
with the same connection, the domain decides, the events are appended with the expected version
and put in the outbox for `placematch.referral`, and the views are rebuilt — again from a fresh
load if another writer appended first. A command returns the referral as it changed it, and the
route answers from that (`projections.borough_view_of`), not from a read-back of the view.

Reactions run in the consumer's transaction (they get `conn`), and decide with the event's own
`time`, never the wall clock, so a replay gives the same tables.
"""
from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.aggregate import NewEvent
from shared.auth import Principal
from shared.commands import Decide
from shared.consumers import PoisonEvent
from shared.errors import NotFound
from shared.events import Envelope
from shared.service import ServiceRuntime
from shared.store import people_of
from shared.vocabulary import (
    DeclineReason,
    NotificationRequest,
    Recipient,
    WebhookType,
    format_instant,
    now_utc,
    parse_instant,
)

from . import personal, projections
from .audit import build_audit_pack
from .details import ReferralDetails
from .domain import Referral

TOPIC = "referral"
NOTIFICATIONS = "notifications"
NOTIFICATION_NAMESPACE = uuid.UUID("8a4f3c1e-3b7d-5f0a-9c2e-6d1b4a7e9f30")

async def _run(runtime: ServiceRuntime, referral_id: str, decide: Decide[Referral], *, created: str | None = None,
               then: Callable[[AsyncConnection, Referral], Awaitable[None]] | None = None) -> Referral:
    """One command on one referral; the views rebuilt from it in the same transaction. `then` runs
    after the append, before the views, even when nothing was recorded."""
    async def project(conn: AsyncConnection, referral: Referral, envelopes: list[Envelope]) -> None:
        if then is not None:
            await then(conn, referral)
        await projections.update_referral_view(conn, referral, envelopes)

    referral, _ = await runtime.command(Referral, referral_id, decide, topic=TOPIC, project=project,
                                        project_unchanged=then is not None, created=created)
    return referral


# --- borough commands --------------------------------------------------------------------------


async def raise_referral(runtime: ServiceRuntime, *, who: Principal, details: ReferralDetails) -> Referral:
    return await _run(runtime, str(uuid.uuid4()),
                      lambda _, referral: referral.raise_referral(who.tenant, details, now_utc()))


async def amend(runtime: ServiceRuntime, *, who: Principal, referral_id: str, changes: Mapping[str, Any]) -> Referral:
    return await _run(runtime, referral_id, lambda _, referral: referral.amend(who.tenant, changes, now_utc()))


async def withdraw(runtime: ServiceRuntime, *, who: Principal, referral_id: str, reason: str | None) -> Referral:
    return await _run(runtime, referral_id, lambda _, referral: referral.withdraw(who.tenant, reason))


async def close(runtime: ServiceRuntime, *, who: Principal, referral_id: str) -> Referral:
    return await _run(runtime, referral_id, lambda _, referral: referral.close(who.tenant))


async def award(runtime: ServiceRuntime, *, who: Principal, referral_id: str, offer_id: str,
                justification: str | None) -> Referral:
    async def decide(conn: AsyncConnection, referral: Referral) -> list[NewEvent]:
        shortlist = await projections.shortlist_of(conn, referral_id)
        suspended = await projections.suspended_among(conn, [o.provider_id for o in referral.offers.values()])
        return referral.award(borough=who.tenant, offer_id=offer_id, justification=justification,
                              shortlist=shortlist, suspended_providers=suspended, now=now_utc())

    return await _run(runtime, referral_id, decide)


async def erase_personal_data(runtime: ServiceRuntime, *, who: Principal, referral_id: str) -> Referral:
    """Erase the child's identity on request: the event and the destroyed sealing key in one
    transaction. The event log, the views and the stored Idempotency-Key answers hold the child's
    details only sealed under that key, so nothing else needs touching, on any database. (Run
    again, it destroys a key left by an erasure recorded before this was one transaction.)"""
    def decide(conn: AsyncConnection, referral: Referral) -> list[NewEvent]:
        if referral.version == 0:
            raise NotFound(f"referral {referral_id} not found")
        return referral.erase_personal_data(who.tenant, now_utc())

    async def destroy_key(conn: AsyncConnection, _: Referral) -> None:
        await personal.erase(conn, referral_id)

    referral = await _run(runtime, referral_id, decide, then=destroy_key)
    if runtime.db.is_sqlite:  # secure_delete zeroes freed pages; the checkpoint empties the WAL
        async with runtime.db.engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return referral


# --- provider commands -------------------------------------------------------------------------


async def submit_offer(runtime: ServiceRuntime, *, who: Principal, referral_id: str, weekly_fee_pence: int,
                       start_date: date, notes: str | None) -> tuple[Referral, str]:
    """The referral with the new offer, and the offer's id (which a lost answer names)."""
    offer_id = str(uuid.uuid4())

    async def decide(conn: AsyncConnection, referral: Referral) -> list[NewEvent]:
        invitation = await projections.invitation_of(conn, referral_id, who.tenant)
        return referral.submit_offer(offer_id=offer_id, provider_id=who.tenant, invitation=invitation,
                                     weekly_fee_pence=weekly_fee_pence, start_date=start_date, notes=notes,
                                     now=now_utc())

    return await _run(runtime, referral_id, decide, created=offer_id), offer_id


async def withdraw_offer(runtime: ServiceRuntime, *, who: Principal, referral_id: str, offer_id: str,
                         reason: str | None) -> Referral:
    return await _run(runtime, referral_id, lambda _, referral: referral.withdraw_offer(who.tenant, offer_id, reason))


async def decline(runtime: ServiceRuntime, *, who: Principal, referral_id: str, reason: DeclineReason,
                  note: str | None) -> Referral:
    async def decide(conn: AsyncConnection, referral: Referral) -> list[NewEvent]:
        invitation = await projections.invitation_of(conn, referral_id, who.tenant)
        return referral.decline(who.tenant, invitation, reason, note)

    return await _run(runtime, referral_id, decide)


# --- the deadline closer -----------------------------------------------------------------------


async def due_for_closing(runtime: ServiceRuntime, *, now: datetime) -> list[str]:
    """Open referrals whose deadline passed by `now` with no standing offer (each close re-checks)."""
    async with runtime.db.read() as conn:
        return await projections.referrals_due_for_closing(conn, format_instant(now, "seconds"))


async def close_unfilled(runtime: ServiceRuntime, *, referral_id: str, now: datetime) -> bool:
    """Close one referral whose deadline passed with no offer; False if it no longer qualifies."""
    def decide(_: AsyncConnection, referral: Referral) -> list[NewEvent]:
        return referral.close_unfilled(now) if referral.is_due_for_closing(now) else []

    referral = await _run(runtime, referral_id, decide)
    return referral.status == "closed" and referral.close_reason == "unfilled"


# --- reactions to consumed events --------------------------------------------------------------


async def keep_for_audit(conn: AsyncConnection, event: Envelope) -> None:
    """Matching's decisions and notification outcomes about a referral, for its evidence pack."""
    await projections.record_for_audit(conn, event)


async def on_referral_matched(conn: AsyncConnection, event: Envelope) -> None:
    """Who is invited (cumulative): invited providers may offer, everyone else gets 403."""
    data = event.data
    referral_id = data.get("referral_id") or event.subject
    invited = data.get("invited")
    if not referral_id or not isinstance(invited, list):
        raise PoisonEvent(f"referral-matched {event.id} lacks referral_id or invited")
    await projections.record_match(conn, referral_id, data.get("borough"), [str(p) for p in invited], event.time)


async def on_shortlist_ranked(conn: AsyncConnection, event: Envelope) -> None:
    """The ranking an award is judged against."""
    data = event.data
    referral_id = data.get("referral_id") or event.subject
    entries = data.get("entries")
    if not referral_id or not isinstance(entries, list):
        raise PoisonEvent(f"shortlist-ranked {event.id} lacks referral_id or entries")
    await projections.record_shortlist(conn, referral_id, data.get("policy_version"), entries,
                                       data.get("excluded") or [], event.time)


async def on_provider_suspended(conn: AsyncConnection, event: Envelope) -> None:
    """A suspended provider may not offer and may not be awarded."""
    await projections.record_standing(conn, event.subject, True, event.data.get("reason"), event.time)


async def on_provider_reinstated(conn: AsyncConnection, event: Envelope) -> None:
    await projections.record_standing(conn, event.subject, False, None, event.time)


async def on_award_collapsed(runtime: ServiceRuntime, conn: AsyncConnection, event: Envelope) -> None:
    """Placement's `award-collapsed` (placematch.placement): the award is revoked and the next offer
    awarded, or the referral reopened (`Referral.after_collapse`), in the consumer's transaction.
    The next award's `placement-awarded` notifies the providers as every award does (matching's
    `offer.accepted` / `offer.not_selected`); a reopening notifies the borough and every provider
    whose offer stands again (`referral.reopened`). An off-framework placement has no referral."""
    data = event.data
    referral_id = data.get("referral_id")
    if not referral_id or data.get("next") == "none":
        return
    if not data.get("offer_id"):
        raise PoisonEvent(f"award-collapsed {event.id} names no offer")
    referral = await runtime.store.load(Referral, str(referral_id), conn)
    if referral.version == 0:
        return
    suspended = await projections.suspended_among(conn, [o.provider_id for o in referral.offers.values()])
    events = referral.after_collapse(collapse=data, placement_id=event.subject, suspended_providers=suspended,
                                     at=parse_instant(event.time))
    if not events:
        return
    envelopes = await runtime.store.append(conn, referral.id, referral.version, events, topic=runtime.topic(TOPIC))
    referral.mutate(events)
    await projections.update_referral_view(conn, referral, envelopes)
    reopened = next((e for e in events if e.type == "referral-reopened"), None)
    if reopened is not None:
        requests = reopen_notifications(event.id, referral.id, referral.borough, reopened.data)
        await runtime.store.append_many(conn, [(r.notification_id, None, [r.as_event()]) for r in requests],
                                        topic=runtime.topic(NOTIFICATIONS))


def reopen_notifications(cause: str, referral_id: str, borough: str,
                         reopened: Mapping[str, Any]) -> list[NotificationRequest]:
    """`referral.reopened` to the borough (why, the new deadline, how many offers stand) and to each
    provider whose offer stands again (its own offer only: no rival is named)."""
    kind = WebhookType.REFERRAL_REOPENED.value

    def request(role: str, tenant: str, data: dict[str, Any]) -> NotificationRequest:
        notification_id = str(uuid.uuid5(NOTIFICATION_NAMESPACE, f"{cause}|{referral_id}|{kind}|{role}|{tenant}"))
        return NotificationRequest(notification_id, kind, Recipient(role, tenant), None, referral_id, data)

    standing = list(reopened.get("standing_offers") or [])
    requests = [request("borough", borough, {
        "referral_id": referral_id, "offer_deadline": reopened["offer_deadline"], "reason": reopened["reason"],
        "collapsed_offer_id": reopened["collapsed_offer_id"], "standing_offers": len(standing)})]
    for offer in sorted(standing, key=lambda o: (o["provider_id"], o["offer_id"])):
        requests.append(request("provider", offer["provider_id"], {
            "referral_id": referral_id, "offer_id": offer["offer_id"], "offer_deadline": reopened["offer_deadline"]}))
    return requests


# --- queries -----------------------------------------------------------------------------------


async def audit_pack(runtime: ServiceRuntime, *, who: Principal, referral_id: str) -> dict[str, Any]:
    """The evidence pack: this referral's own events and what the other services recorded about it."""
    async with runtime.db.read() as conn:
        row = await projections.load_view_row(conn, referral_id)
        if row is None or (who.role == "borough" and row.borough != who.tenant):
            raise NotFound(f"referral {referral_id} not found")
        events = await runtime.store.read_stream(referral_id, conn)
        events += await projections.audit_trail_of(conn, referral_id)
        people = await people_of(conn, (e.actorid for e in events))
    return build_audit_pack(referral_id, events, people)


async def view_for(runtime: ServiceRuntime, *, who: Principal, referral_id: str,
                   today: date | None = None) -> dict[str, Any]:
    """The referral as `who` may see it; 404 for anything it may not see (no existence leak)."""
    today = today or now_utc().date()
    async with runtime.db.read() as conn:
        row = await projections.load_view_row(conn, referral_id)
        if row is not None and who.role == "borough" and row.borough == who.tenant:
            return projections.borough_view(
                row, await projections.offers_of(conn, referral_id), await projections.declines_of(conn, referral_id))
        if row is not None and who.role == "provider" and await projections.is_invited(conn, referral_id, who.tenant):
            return projections.provider_view(
                row, await projections.offers_of(conn, referral_id, who.tenant),
                await projections.declines_of(conn, referral_id, who.tenant), today)
    raise NotFound(f"referral {referral_id} not found")


async def list_for(runtime: ServiceRuntime, *, who: Principal, status: str | None, limit: int,
                   offset: int) -> list[dict[str, Any]]:
    today = now_utc().date()
    async with runtime.db.read() as conn:
        if who.role == "borough":
            rows = await projections.list_for_borough(conn, who.tenant, status, limit, offset)
            return [projections.borough_view(r, await projections.offers_of(conn, r.referral_id),
                                             await projections.declines_of(conn, r.referral_id)) for r in rows]
        if who.role in ("commissioner", "auditor"):
            rows = await projections.list_all(conn, status, limit, offset)
            return [projections.overseer_view(r, await projections.offers_of(conn, r.referral_id),
                                              await projections.declines_of(conn, r.referral_id), today)
                    for r in rows]
        rows = await projections.list_for_provider(conn, who.tenant, status, limit, offset)
        return [projections.provider_view(r, await projections.offers_of(conn, r.referral_id, who.tenant),
                                          await projections.declines_of(conn, r.referral_id, who.tenant), today)
                for r in rows]
