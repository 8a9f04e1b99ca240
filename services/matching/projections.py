"""Read models of the matching service, fed only by events (its own and those it consumes).

provider directory · open referrals · offers · declines · eligibility results · shortlists.
JSON columns hold canonical JSON (sorted keys) so that what we read back is what we wrote.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Column, Index, Integer, MetaData, String, Table, Text, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import upsert, upsert_many
from shared.events import dumps, loads

from .eligibility import Eligibility, ProviderFacts, ReferralFacts
from .insights import ReferralRecord
from .ranking import DEFAULT_POLICY, Offer

metadata = MetaData()

providers = Table(
    "matching_providers", metadata,
    Column("provider_id", String(64), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("profile", Text, nullable=False, doc="canonical JSON of the provider profile"),
    Column("quality_score", String(10), nullable=True),
    Column("placements_held", Integer, nullable=True, doc="from provider-vacancies-changed; null before"),
)

referrals = Table(
    "matching_referrals", metadata,
    Column("referral_id", String(64), primary_key=True),
    Column("borough", String(64), nullable=False, index=True),
    Column("status", String(20), nullable=False, doc="open | awarded | withdrawn | closed"),
    Column("facts", Text, nullable=False, doc="canonical JSON of the referral as last raised/amended"),
    Column("primary_need", String(10), nullable=False),
    Column("raised_at", String(40), nullable=False),
    Column("invited_count", Integer, nullable=False, default=0),
    Column("awarded_offer_id", String(64), nullable=True),
    Column("awarded_fee_pence", Integer, nullable=True),
    Column("awarded_at", String(40), nullable=True),
    Column("closed_unfilled", Boolean, nullable=False, default=False),
)
Index("ix_matching_referrals_status", referrals.c.status)

offers = Table(
    "matching_offers", metadata,
    Column("offer_id", String(64), primary_key=True),
    Column("referral_id", String(64), nullable=False, index=True),
    Column("provider_id", String(64), nullable=False, index=True),
    Column("weekly_fee_pence", Integer, nullable=False),
    Column("submitted_at", String(40), nullable=False),
    Column("arrival", Integer, nullable=False, doc="1, 2, ... in the order matching saw the offers"),
    Column("withdrawn", Boolean, nullable=False, default=False),
)

declines = Table(
    "matching_declines", metadata,
    Column("referral_id", String(64), primary_key=True),
    Column("provider_id", String(64), primary_key=True),
    Column("reason", String(40), nullable=False),
)

eligibility = Table(
    "matching_eligibility", metadata,
    Column("referral_id", String(64), primary_key=True),
    Column("provider_id", String(64), primary_key=True),
    Column("eligible", Boolean, nullable=False),
    Column("invited", Boolean, nullable=False),
    Column("rules", Text, nullable=False),
    Column("distance_km", String(20), nullable=True),
    Column("trigger", String(40), nullable=False),
)

shortlists = Table(
    "matching_shortlists", metadata,
    Column("referral_id", String(64), primary_key=True),
    Column("borough", String(64), nullable=False),
    Column("policy_version", Integer, nullable=False),
    Column("data", Text, nullable=False, doc="the data of the last shortlist-ranked"),
    Column("event_id", String(36), nullable=False),
)

PROFILE_FIELDS = ("name", "urn", "kind", "lots", "age_min", "age_max", "genders", "placement_types",
                  "capacity", "location", "boroughs_served", "contact_email")


# --------------------------------------------------------------------------- providers

def _provider(row: Any) -> ProviderFacts:
    return ProviderFacts.from_profile(row.provider_id, row.status, loads(row.profile), row.quality_score,
                                      row.placements_held)


async def get_provider(conn: AsyncConnection, provider_id: str) -> ProviderFacts | None:
    row = (await conn.execute(select(providers).where(providers.c.provider_id == provider_id))).first()
    return _provider(row) if row else None


async def provider_directory(conn: AsyncConnection) -> dict[str, ProviderFacts]:
    rows = (await conn.execute(select(providers).order_by(providers.c.provider_id))).all()
    return {r.provider_id: _provider(r) for r in rows}


async def providers_by_id(conn: AsyncConnection, ids: set[str]) -> dict[str, ProviderFacts]:
    if not ids:
        return {}
    rows = (await conn.execute(select(providers).where(providers.c.provider_id.in_(sorted(ids))))).all()
    return {r.provider_id: _provider(r) for r in rows}


async def save_provider(conn: AsyncConnection, provider_id: str, status: str, profile: dict[str, Any],
                        quality_score: Any) -> None:
    kept = {k: profile.get(k) for k in PROFILE_FIELDS}
    await upsert(conn, providers, {
        "provider_id": provider_id, "status": status, "profile": dumps(kept).decode(),
        "quality_score": None if quality_score is None else str(quality_score)}, ["provider_id"])


async def set_provider_held(conn: AsyncConnection, provider_id: str, placements_held: int) -> bool:
    result = await conn.execute(update(providers).where(providers.c.provider_id == provider_id).values(
        placements_held=placements_held))
    return bool(result.rowcount)


async def set_provider_status(conn: AsyncConnection, provider_id: str, status: str) -> bool:
    result = await conn.execute(update(providers).where(providers.c.provider_id == provider_id).values(status=status))
    return bool(result.rowcount)


async def set_provider_quality(conn: AsyncConnection, provider_id: str, quality_score: Any) -> bool:
    result = await conn.execute(update(providers).where(providers.c.provider_id == provider_id).values(
        quality_score=None if quality_score is None else str(quality_score)))
    return bool(result.rowcount)


# --------------------------------------------------------------------------- referrals

def _referral(row: Any) -> ReferralFacts:
    return ReferralFacts.from_referral(row.referral_id, loads(row.facts), raised_at=row.raised_at)


async def get_referral(conn: AsyncConnection, referral_id: str) -> tuple[ReferralFacts, Any] | None:
    row = (await conn.execute(select(referrals).where(referrals.c.referral_id == referral_id))).first()
    return (_referral(row), row) if row else None


async def open_referrals(conn: AsyncConnection) -> list[ReferralFacts]:
    rows = (await conn.execute(select(referrals).where(referrals.c.status == "open")
                               .order_by(referrals.c.raised_at, referrals.c.referral_id))).all()
    return [_referral(r) for r in rows]


async def open_referrals_with_offers_from(conn: AsyncConnection, provider_id: str) -> list[ReferralFacts]:
    ids = select(offers.c.referral_id).where(offers.c.provider_id == provider_id)
    rows = (await conn.execute(select(referrals).where(
        (referrals.c.status == "open") & referrals.c.referral_id.in_(ids))
        .order_by(referrals.c.raised_at, referrals.c.referral_id))).all()
    return [_referral(r) for r in rows]


async def save_referral(conn: AsyncConnection, referral_id: str, facts: dict[str, Any], raised_at: str) -> None:
    existing = await get_referral(conn, referral_id)
    values = {"referral_id": referral_id, "borough": str(facts.get("borough") or ""),
              "facts": dumps(facts).decode(), "primary_need": str(facts.get("primary_need") or ""),
              "raised_at": raised_at}
    if existing is None:
        await conn.execute(referrals.insert().values(**values, status="open", invited_count=0, closed_unfilled=False))
    else:
        await conn.execute(update(referrals).where(referrals.c.referral_id == referral_id).values(**values))


async def set_referral(conn: AsyncConnection, referral_id: str, **values: Any) -> None:
    await conn.execute(update(referrals).where(referrals.c.referral_id == referral_id).values(**values))


# --------------------------------------------------------------------------- offers, declines

def _offer(row: Any) -> Offer:
    return Offer(row.offer_id, row.provider_id, row.weekly_fee_pence, row.submitted_at, row.arrival, row.withdrawn)


async def offers_for(conn: AsyncConnection, referral_id: str) -> list[Offer]:
    rows = (await conn.execute(select(offers).where(offers.c.referral_id == referral_id)
                               .order_by(offers.c.arrival))).all()
    return [_offer(r) for r in rows]


async def add_offer(conn: AsyncConnection, referral_id: str, data: dict[str, Any]) -> None:
    if (await conn.execute(select(offers.c.offer_id).where(offers.c.offer_id == data["offer_id"]))).first():
        return
    arrival = (await conn.execute(select(func.coalesce(func.max(offers.c.arrival), 0))
                                  .where(offers.c.referral_id == referral_id))).scalar_one() + 1
    await conn.execute(offers.insert().values(
        offer_id=data["offer_id"], referral_id=referral_id, provider_id=data["provider_id"],
        weekly_fee_pence=int(data["weekly_fee_pence"]), submitted_at=str(data.get("submitted_at") or ""),
        arrival=arrival, withdrawn=False))


async def withdraw_offer(conn: AsyncConnection, offer_id: str) -> None:
    await conn.execute(update(offers).where(offers.c.offer_id == offer_id).values(withdrawn=True))


async def record_decline(conn: AsyncConnection, referral_id: str, provider_id: str, reason: str) -> None:
    await upsert(conn, declines, {"referral_id": referral_id, "provider_id": provider_id, "reason": reason},
                 ["referral_id", "provider_id"])


# --------------------------------------------------------------------------- decisions

async def record_eligibility(conn: AsyncConnection, referral_id: str, results: list[Eligibility],
                             invited: list[str], trigger: str) -> None:
    invited_set = set(invited)
    rows = [{
        "referral_id": referral_id, "provider_id": r.provider_id, "eligible": r.eligible,
        "invited": r.provider_id in invited_set, "rules": dumps(r.rules).decode(),
        "distance_km": None if r.distance_km is None else str(r.distance_km), "trigger": trigger,
    } for r in results]
    await upsert_many(conn, eligibility, rows, ["referral_id", "provider_id"])
    await set_referral(conn, referral_id, invited_count=len(invited_set))


async def eligibility_for(conn: AsyncConnection, referral_id: str) -> list[dict[str, Any]]:
    rows = (await conn.execute(select(eligibility).where(eligibility.c.referral_id == referral_id)
                               .order_by(eligibility.c.provider_id))).all()
    return [{"provider_id": r.provider_id, "eligible": r.eligible, "invited": r.invited,
             "rules": loads(r.rules), "distance_km": r.distance_km} for r in rows]


async def is_invited(conn: AsyncConnection, referral_id: str, provider_id: str) -> bool:
    row = (await conn.execute(select(eligibility.c.invited).where(
        (eligibility.c.referral_id == referral_id) & (eligibility.c.provider_id == provider_id)))).first()
    return bool(row and row.invited)


async def save_shortlist(conn: AsyncConnection, data: dict[str, Any], event_id: str) -> None:
    await upsert(conn, shortlists, {
        "referral_id": data["referral_id"], "borough": data["borough"], "policy_version": data["policy_version"],
        "data": dumps(data).decode(), "event_id": event_id}, ["referral_id"])


async def shortlist_for(conn: AsyncConnection, referral_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(shortlists.c.data).where(shortlists.c.referral_id == referral_id))).first()
    return loads(row.data) if row else None


# --------------------------------------------------------------------------- insights

async def insight_records(conn: AsyncConnection, borough: str | None = None) -> list[ReferralRecord]:
    """Referrals with their standing offers only: a withdrawn offer counts nowhere, and a provider
    counts once per referral (its latest standing offer, should it ever hold two)."""
    query = select(referrals)
    if borough is not None:
        query = query.where(referrals.c.borough == borough)
    rows = (await conn.execute(query.order_by(referrals.c.referral_id))).all()
    if not rows:
        return []
    standing = select(offers.c.referral_id, offers.c.provider_id, offers.c.weekly_fee_pence).where(
        offers.c.withdrawn.is_(False))
    if borough is not None:
        standing = standing.where(offers.c.referral_id.in_(
            select(referrals.c.referral_id).where(referrals.c.borough == borough)))
    fees: dict[str, dict[str, int]] = {}
    for o in (await conn.execute(standing.order_by(offers.c.referral_id, offers.c.arrival))).all():
        fees.setdefault(o.referral_id, {})[o.provider_id] = o.weekly_fee_pence
    declined: dict[str, dict[str, int]] = {}
    for d in (await conn.execute(select(declines.c.referral_id, declines.c.reason))).all():
        reasons = declined.setdefault(d.referral_id, {})
        reasons[d.reason] = reasons.get(d.reason, 0) + 1
    return [ReferralRecord(
        referral_id=r.referral_id, borough=r.borough, primary_need=r.primary_need, raised_at=r.raised_at,
        invited=r.invited_count, offers=fees.get(r.referral_id, {}), declines=declined.get(r.referral_id, {}),
        awarded_fee=r.awarded_fee_pence, awarded_at=r.awarded_at, closed_unfilled=bool(r.closed_unfilled),
        status=r.status,
    ) for r in rows]


def policy_history(events: list[Any]) -> list[dict[str, Any]]:
    """Every version of the ranking policy from its stream's `policy-changed` events, newest first
    (version 1, the default of DESIGN.md, has no event: it is listed last with no date or actor)."""
    items: list[dict[str, Any]] = [{**DEFAULT_POLICY.as_dict(), "changed_at": None, "actor": None}]
    for event in events:
        if event.type == "policy-changed":
            data = event.data
            items.append({"version": int(data["version"]), "quality_weight": data["quality_weight"],
                          "price_weight": data["price_weight"], "min_quality": data.get("min_quality"),
                          "changed_at": event.time, "actor": event.actor})
    return sorted(items, key=lambda item: -int(item["version"]))
