"""Application service: load the referral, gather what other services told us, decide, record.

Each command runs in one transaction: the aggregate is loaded, the facts it needs (invitation,
suspensions, the shortlist) are read from the read models with the same connection, the domain
decides, the events are appended with the expected version and put in the outbox, and the views
are rebuilt. A concurrent append makes the whole thing retry from a fresh load.
"""
from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Awaitable, Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncConnection

from services.referral import personal, projections
from services.referral.audit import build_audit_pack
from services.referral.domain import Referral
from shared.aggregate import NewEvent
from shared.auth import Principal
from shared.errors import ConcurrencyError, NotFound
from shared.events import now_utc
from shared.service import ServiceRuntime
from shared.store import people_of

Decision = Callable[[AsyncConnection, Referral], Awaitable[list[NewEvent]]]
Step = Callable[[AsyncConnection, Referral], Awaitable[None]]


async def execute(runtime: ServiceRuntime, referral_id: str, decide: Decision, attempts: int = 3, *,
                  created: str | None = None, then: Step | None = None) -> Referral:
    """`created`: the id of what the events create inside the referral (an offer), which a keyed
    request's `answer_lost` names; `then` runs after the append, before the views are rebuilt."""
    for attempt in range(attempts):
        try:
            async with runtime.db.transaction() as conn:
                referral = await runtime.store.load(Referral, referral_id, conn)
                events = await decide(conn, referral)
                envelopes = await runtime.store.append(
                    conn, referral_id, referral.version, events, topic=runtime.topic("referral"), created=created)
                referral.mutate(events)
                if then is not None:
                    await then(conn, referral)
                if events or then is not None:
                    await projections.update_referral_view(conn, referral, envelopes)
            return referral
        except ConcurrencyError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


# --- borough commands --------------------------------------------------------------------------


async def raise_referral(runtime: ServiceRuntime, who: Principal, body: Mapping[str, Any]) -> Referral:
    referral_id = str(uuid.uuid4())

    async def decide(_: AsyncConnection, referral: Referral) -> list[NewEvent]:
        return referral.raise_referral(who.tenant, body, now_utc())

    return await execute(runtime, referral_id, decide)


async def amend(runtime: ServiceRuntime, who: Principal, referral_id: str, changes: Mapping[str, Any]) -> Referral:
    async def decide(_: AsyncConnection, referral: Referral) -> list[NewEvent]:
        return referral.amend(who.tenant, changes, now_utc())

    return await execute(runtime, referral_id, decide)


async def withdraw(runtime: ServiceRuntime, who: Principal, referral_id: str, reason: str | None) -> Referral:
    async def decide(_: AsyncConnection, referral: Referral) -> list[NewEvent]:
        return referral.withdraw(who.tenant, reason)

    return await execute(runtime, referral_id, decide)


async def close(runtime: ServiceRuntime, who: Principal, referral_id: str) -> Referral:
    async def decide(_: AsyncConnection, referral: Referral) -> list[NewEvent]:
        return referral.close(who.tenant)

    return await execute(runtime, referral_id, decide)


async def award(runtime: ServiceRuntime, who: Principal, referral_id: str, offer_id: Any,
                justification: Any) -> Referral:
    async def decide(conn: AsyncConnection, referral: Referral) -> list[NewEvent]:
        shortlist = await projections.shortlist_of(conn, referral_id)
        suspended = await projections.suspended_among(conn, [o.provider_id for o in referral.offers.values()])
        return referral.award(borough=who.tenant, offer_id=offer_id, justification=justification,
                              shortlist=shortlist, suspended_providers=suspended, now=now_utc())

    return await execute(runtime, referral_id, decide)


# --- provider commands -------------------------------------------------------------------------


async def submit_offer(runtime: ServiceRuntime, who: Principal, referral_id: str,
                       body: Mapping[str, Any]) -> tuple[Referral, str]:
    offer_id = str(uuid.uuid4())

    async def decide(conn: AsyncConnection, referral: Referral) -> list[NewEvent]:
        invitation = await projections.invitation_of(conn, referral_id, who.tenant)
        return referral.submit_offer(
            offer_id=offer_id, provider_id=who.tenant, invitation=invitation,
            weekly_fee_pence=body.get("weekly_fee_pence"), start_date=body.get("start_date"),
            notes=body.get("notes"), now=now_utc())

    return await execute(runtime, referral_id, decide, created=offer_id), offer_id


async def withdraw_offer(runtime: ServiceRuntime, who: Principal, referral_id: str, offer_id: str,
                         reason: str | None) -> Referral:
    async def decide(_: AsyncConnection, referral: Referral) -> list[NewEvent]:
        return referral.withdraw_offer(who.tenant, offer_id, reason)

    return await execute(runtime, referral_id, decide)


async def decline(runtime: ServiceRuntime, who: Principal, referral_id: str, reason: Any, note: Any) -> Referral:
    async def decide(conn: AsyncConnection, referral: Referral) -> list[NewEvent]:
        invitation = await projections.invitation_of(conn, referral_id, who.tenant)
        return referral.decline(who.tenant, invitation, reason, note)

    return await execute(runtime, referral_id, decide)


# --- the deadline closer -----------------------------------------------------------------------


async def erase_personal_data(runtime: ServiceRuntime, who: Principal, referral_id: str) -> Referral:
    """Erase the child's identity on request: the event and the destroyed sealing key in one
    transaction. The event log, the views and the stored Idempotency-Key answers hold the child's
    details only sealed under that key, so nothing else needs touching, on any database. (Run
    again, it destroys a key left by an erasure recorded before this was one transaction.)"""
    async def decide(conn: AsyncConnection, referral: Referral) -> list[NewEvent]:
        if referral.version == 0:
            raise NotFound(f"referral {referral_id} not found")
        return referral.erase_personal_data(who.tenant, now_utc())

    async def destroy_key(conn: AsyncConnection, _: Referral) -> None:
        await personal.erase(conn, referral_id)

    referral = await execute(runtime, referral_id, decide, then=destroy_key)
    if runtime.db.is_sqlite:  # secure_delete zeroes freed pages; the checkpoint empties the WAL
        async with runtime.db.engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return referral


async def audit_pack(runtime: ServiceRuntime, who: Principal, referral_id: str) -> dict[str, Any]:
    """The evidence pack: this referral's own events and what the other services recorded about it."""
    async with runtime.db.read() as conn:
        row = await projections.load_view_row(conn, referral_id)
        if row is None or (who.role == "borough" and row.borough != who.tenant):
            raise NotFound(f"referral {referral_id} not found")
        events = await runtime.store.read_stream(referral_id, conn) + await projections.audit_trail_of(conn, referral_id)
        people = await people_of(conn, (e.actorid for e in events))
    return build_audit_pack(referral_id, events, people)


async def close_unfilled(runtime: ServiceRuntime, referral_id: str, now: datetime) -> bool:
    """Close one referral whose deadline passed with no offer; False if it no longer qualifies."""
    async def decide(_: AsyncConnection, referral: Referral) -> list[NewEvent]:
        return referral.close_unfilled(now) if referral.is_due_for_closing(now) else []

    referral = await execute(runtime, referral_id, decide)
    return referral.status == "closed" and referral.close_reason == "unfilled"


# --- queries -----------------------------------------------------------------------------------


async def view_for(runtime: ServiceRuntime, who: Principal, referral_id: str,
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


async def list_for(runtime: ServiceRuntime, who: Principal, status: str | None, limit: int,
                   offset: int) -> list[dict[str, Any]]:
    today = now_utc().date()
    async with runtime.db.read() as conn:
        if who.role == "borough":
            rows = await projections.list_for_borough(conn, who.tenant, status, limit, offset)
            return [projections.borough_view(r, await projections.offers_of(conn, r.referral_id),
                                             await projections.declines_of(conn, r.referral_id)) for r in rows]
        rows = await projections.list_for_provider(conn, who.tenant, status, limit, offset)
        return [projections.provider_view(r, await projections.offers_of(conn, r.referral_id, who.tenant),
                                          await projections.declines_of(conn, r.referral_id, who.tenant), today)
                for r in rows]
