"""Read models of the placement service, fed only by events (its own and those it consumes).

placements (one row per placement: routing columns + the whole view as canonical JSON) ·
referral facts (outcomes and needs of each raised referral, to open its placement with) ·
shortlists (matching's last ranking per referral, for an award's collapse).

Views are folded from event `data` only, never from envelope ids or times, so that replay
(`replay.py`) rebuilds them byte for byte.
"""
from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Column, Index, MetaData, String, Table, Text, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import upsert
from shared.events import dumps, loads
from shared.vocabulary import NEEDS_INDICATORS

from .domain import Contribution, ReferralFacts, ShortlistEntry, SpendFacts

metadata = MetaData()

placements = Table(
    "placement_placements", metadata,
    Column("placement_id", String(64), primary_key=True),
    Column("borough", String(64), nullable=False, index=True),
    Column("provider_id", String(200), nullable=False, index=True),
    Column("referral_id", String(64), nullable=True, index=True),
    Column("status", String(20), nullable=False),
    Column("review_due", String(10), nullable=True),
    Column("view", Text, nullable=False, doc="canonical JSON of the placement view"),
)
Index("ix_placement_placements_status", placements.c.status)

referral_facts = Table(
    "placement_referral_facts", metadata,
    Column("referral_id", String(64), primary_key=True),
    Column("facts", Text, nullable=False, doc="outcomes, needs_profile, primary_need, placement_type, required_from"),
)

shortlists = Table(
    "placement_shortlists", metadata,
    Column("referral_id", String(64), primary_key=True),
    Column("entries", Text, nullable=False, doc="the entries of the referral's last shortlist-ranked"),
)

VIEW_TABLES = (placements, referral_facts, shortlists)


# --------------------------------------------------------------------------- the placement view

def _distance(first: dict[str, int], latest: dict[str, int]) -> dict[str, int] | None:
    if not first or not latest:
        return None
    return {k: latest[k] - first[k] for k in NEEDS_INDICATORS if k in first and k in latest}


def fold(view: dict[str, Any] | None, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    """The placement view after one of its events."""
    if type_ == "placement-opened":
        opened_on = str(data["opened_at"])[:10]
        needs = dict(data.get("needs_profile") or {})
        return {
            "id": data["placement_id"], "origin": data["origin"], "off_framework": data["origin"] == "off_framework",
            "off_framework_reason": data.get("off_framework_reason"),
            "off_framework_note": data.get("off_framework_note"),
            "referral_id": data.get("referral_id"), "offer_id": data.get("offer_id"), "borough": data["borough"],
            "provider_id": data["provider_id"], "provider_name": data.get("provider_name"), "status": "awarded",
            "opened_at": data["opened_at"], "planned_start": data.get("planned_start"), "started_on": None,
            "ended_on": None, "ending": None, "collapse": None, "primary_need": data.get("primary_need"),
            "placement_type": data.get("placement_type"), "justification": data.get("justification"),
            "outcomes": [{"outcome": o, "progress": "not_started", "note": None, "rated_on": None}
                         for o in data.get("outcomes") or []],
            "needs_over_time": [{"on": opened_on, "source": "referral", "needs_profile": needs}] if needs else [],
            "distance_travelled": None,
            "weekly_fee_pence": data["weekly_fee_pence"],
            "fee_history": [{"effective_from": None, "weekly_fee_pence": data["weekly_fee_pence"], "change_id": None}],
            "fee_changes": [], "funding": None, "funding_history": [], "funding_balanced": False,
            "review_due": None, "reviews": [], "review_notices": [],
        }
    assert view is not None, f"{type_} before placement-opened"
    view = dict(view)
    if type_ == "placement-started":
        view |= {"status": "active", "started_on": data["started_on"]}
    elif type_ == "placement-ended":
        view |= {"status": "ended", "ended_on": data["ended_on"], "review_due": None,
                 "ending": {k: data[k] for k in ("ending", "reason", "note", "days")}}
    elif type_ == "award-collapsed":
        view |= {"status": "collapsed", "collapse": {k: data.get(k) for k in (
            "reason", "note", "next", "next_offer_id", "next_provider_id", "top_remaining_offer_id",
            "justification")}}
    elif type_ == "funding-agreed":
        funding = {k: data[k] for k in ("decision", "contributions", "weekly_fee_pence", "agreed_from",
                                        "agreed_until", "review_due", "decided_by")}
        view |= {"funding": funding, "funding_history": [*view["funding_history"], funding],
                 "review_due": data["review_due"]}
    elif type_ == "placement-reviewed":
        ratings = {r["outcome"]: r for r in data["outcomes"]}
        view["outcomes"] = [
            {**o, "progress": ratings[o["outcome"]]["progress"], "note": ratings[o["outcome"]]["note"],
             "rated_on": data["reviewed_on"]} if o["outcome"] in ratings else o for o in view["outcomes"]]
        view["needs_over_time"] = [*view["needs_over_time"], {"on": data["reviewed_on"], "source": "review",
                                                              "needs_profile": data["needs_profile"]}]
        view["reviews"] = [*view["reviews"], {k: data[k] for k in (
            "review_id", "reviewed_on", "outcomes", "needs_profile", "continues", "next_review_due", "note")}]
        view["review_due"] = data.get("next_review_due")
    elif type_ == "placement-review-due":
        view["review_notices"] = [*view["review_notices"], {"review_due": data["review_due"],
                                                            "noticed_on": data["noticed_on"],
                                                            "overdue": data["overdue"]}]
    elif type_ == "fee-change-requested":
        view["fee_changes"] = [*view["fee_changes"], {
            "change_id": data["change_id"], "status": "requested",
            "requested_weekly_fee_pence": data["weekly_fee_pence"],
            "previous_weekly_fee_pence": data["previous_weekly_fee_pence"], "effective_from": data["effective_from"],
            "reason": data["reason"], "agreed_weekly_fee_pence": None, "note": None}]
    elif type_ == "fee-change-decided":
        view["fee_changes"] = [{**c, "status": data["decision"], "agreed_weekly_fee_pence": data["weekly_fee_pence"],
                                "note": data.get("note")} if c["change_id"] == data["change_id"] else c
                               for c in view["fee_changes"]]
        if data.get("weekly_fee_pence") is not None:
            view["fee_history"] = [*view["fee_history"], {"effective_from": data["effective_from"],
                                                          "weekly_fee_pence": data["weekly_fee_pence"],
                                                          "change_id": data["change_id"]}]
            view["weekly_fee_pence"] = current_fee(view)
    else:
        return view
    first = view["needs_over_time"][0]["needs_profile"] if view["needs_over_time"] else {}
    latest = view["needs_over_time"][-1]["needs_profile"] if view["needs_over_time"] else {}
    view["distance_travelled"] = _distance(first, latest) if len(view["needs_over_time"]) > 1 else None
    funding = view["funding"]
    view["funding_balanced"] = bool(funding) and sum(
        c["weekly_pence"] for c in funding["contributions"]) == view["weekly_fee_pence"]
    return view


def _fees(view: dict[str, Any]) -> list[tuple[date | None, int]]:
    return [(date.fromisoformat(f["effective_from"]) if f["effective_from"] else None, f["weekly_fee_pence"])
            for f in view["fee_history"]]


def current_fee(view: dict[str, Any]) -> int:
    from .domain import fee_in_force

    return fee_in_force(_fees(view), date.max)


def spend_facts(view: dict[str, Any]) -> SpendFacts:
    return SpendFacts(
        placement_id=view["id"], borough=view["borough"], provider_id=view["provider_id"],
        off_framework=view["off_framework"],
        started_on=date.fromisoformat(view["started_on"]) if view["started_on"] else None,
        ended_on=date.fromisoformat(view["ended_on"]) if view["ended_on"] else None,
        fees=_fees(view),
        fundings=[(date.fromisoformat(f["agreed_from"]), [Contribution.from_data(c) for c in f["contributions"]])
                  for f in view["funding_history"]],
    )


async def get_view(conn: AsyncConnection, placement_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(placements.c.view).where(placements.c.placement_id == placement_id))).first()
    return loads(row.view) if row else None


async def project(conn: AsyncConnection, placement_id: str, events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Fold new events of one placement into its view."""
    view = await get_view(conn, placement_id)
    for type_, data in events:
        view = fold(view, type_, data)
    assert view is not None
    await upsert(conn, placements, {
        "placement_id": placement_id, "borough": view["borough"], "provider_id": view["provider_id"],
        "referral_id": view["referral_id"], "status": view["status"], "review_due": view["review_due"],
        "view": dumps(view).decode()}, ["placement_id"])
    return view


async def list_views(conn: AsyncConnection, *, borough: str | None = None, provider_id: str | None = None,
                     status: str | None = None, referral_id: str | None = None,
                     due_by: str | None = None) -> list[dict[str, Any]]:
    query = select(placements.c.view)
    if borough is not None:
        query = query.where(placements.c.borough == borough)
    if provider_id is not None:
        query = query.where(placements.c.provider_id == provider_id)
    if status is not None:
        query = query.where(placements.c.status == status)
    if referral_id is not None:
        query = query.where(placements.c.referral_id == referral_id)
    if due_by is not None:
        query = query.where((placements.c.status == "active") & placements.c.review_due.is_not(None)
                            & (placements.c.review_due <= due_by))
    rows = (await conn.execute(query.order_by(placements.c.placement_id))).all()
    return [loads(r.view) for r in rows]


# --------------------------------------------------------------------------- inputs kept

async def save_referral_facts(conn: AsyncConnection, referral_id: str, referral: dict[str, Any]) -> None:
    """Only what a placement needs; never `child_ref` or `birth_date`."""
    facts = {"outcomes": list(referral.get("outcomes") or []),
             "needs_profile": dict(referral.get("needs_profile") or {}),
             "primary_need": referral.get("primary_need"), "placement_type": referral.get("placement_type"),
             "required_from": referral.get("required_from")}
    await upsert(conn, referral_facts, {"referral_id": referral_id, "facts": dumps(facts).decode()}, ["referral_id"])


async def get_referral_facts(conn: AsyncConnection, referral_id: str) -> ReferralFacts | None:
    query = select(referral_facts.c.facts).where(referral_facts.c.referral_id == referral_id)
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    f = loads(row.facts)
    return ReferralFacts(outcomes=f["outcomes"], needs_profile=f["needs_profile"], primary_need=f["primary_need"],
                         placement_type=f["placement_type"], required_from=f["required_from"])


async def save_shortlist(conn: AsyncConnection, referral_id: str, entries: list[dict[str, Any]]) -> None:
    kept = [{k: e[k] for k in ("rank", "offer_id", "provider_id", "weekly_fee_pence")} for e in entries]
    await upsert(conn, shortlists, {"referral_id": referral_id, "entries": dumps(kept).decode()}, ["referral_id"])


async def get_shortlist(conn: AsyncConnection, referral_id: str) -> list[ShortlistEntry] | None:
    row = (await conn.execute(select(shortlists.c.entries).where(shortlists.c.referral_id == referral_id))).first()
    if row is None:
        return None
    return [ShortlistEntry(int(e["rank"]), str(e["offer_id"]), str(e["provider_id"]), int(e["weekly_fee_pence"]))
            for e in loads(row.entries)]


async def dump_tables(conn: AsyncConnection) -> dict[str, list[str]]:
    """Every view row as canonical JSON, table by table in key order (replay compares these)."""
    out: dict[str, list[str]] = {}
    for table in VIEW_TABLES:
        keys = list(table.primary_key.columns)
        rows = (await conn.execute(select(table).order_by(*keys))).mappings().all()
        out[table.name] = [dumps({str(k): v for k, v in r.items()}).decode() for r in rows]
    return out
