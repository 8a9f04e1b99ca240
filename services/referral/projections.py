"""Read models of the referral service, and the borough and provider views built from them.

Tables:
- `referral_views`, `referral_offers`, `referral_declines`: the referral as the borough sees it,
  rebuilt from the aggregate in the same transaction as every append. The child's `child_ref`
  and birth date are kept sealed under the referral's key (`personal.py`), as in the event log,
  and opened on read: erasure (destroying the key) leaves nothing to scrub.
- `referral_invitations`, `referral_matches`: who matching invited (from `referral-matched`);
  a row in `referral_matches` means the invitation list is known.
- `provider_standing`: suspensions from `placematch.enrolment`.
- `referral_shortlists`: the latest `shortlist-ranked` per referral.

Views: `borough_view` is everything; `provider_view` is redacted for an invited provider (no
`child_ref`, no birth date, no preferred provider, location only to district) and shows only that
provider's own offers — until its offer is awarded, when the placement needs the full details.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, Integer, MetaData, String, Table, Text, and_, exists, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import upsert
from shared.events import Envelope, dumps, loads
from shared.vocabulary import age_in_years

from . import personal
from .domain import Referral
from .offers import Invitation, Shortlist

metadata = MetaData()

referral_views = Table(
    "referral_views",
    metadata,
    Column("referral_id", String(36), primary_key=True),
    Column("borough", String(100), nullable=False, index=True),
    Column("status", String(20), nullable=False, index=True),
    Column("offer_deadline", String(40), nullable=False, index=True, doc="YYYY-MM-DDTHH:MM:SSZ, sorts as text"),
    Column("raised_at", String(40), nullable=True),
    Column("version", Integer, nullable=False),
    Column("referral", Text, nullable=False,
           doc="the EVENTS.md `referral` object as JSON, child_ref and birth_date sealed (personal.py)"),
    Column("outcome", Text, nullable=True, doc="award / withdrawal / closure facts as JSON"),
)

referral_offers = Table(
    "referral_offers",
    metadata,
    Column("offer_id", String(64), primary_key=True),
    Column("referral_id", String(36), nullable=False, index=True),
    Column("provider_id", String(100), nullable=False, index=True),
    Column("weekly_fee_pence", BigInteger, nullable=False),
    Column("start_date", String(10), nullable=False),
    Column("notes", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("submitted_at", String(40), nullable=False),
    Column("withdrawal_reason", Text, nullable=True),
    Column("submitted_by", String(100), nullable=True,
           doc="`actorid` (token `sub`) of the offer-submitted envelope: the staff member; null before issue 17"),
    Column("withdrawn_by", String(100), nullable=True, doc="`actorid` of the offer-withdrawn envelope"),
)

referral_declines = Table(
    "referral_declines",
    metadata,
    Column("referral_id", String(36), primary_key=True),
    Column("provider_id", String(100), primary_key=True),
    Column("reason", String(40), nullable=False),
    Column("note", Text, nullable=True),
)

referral_matches = Table(
    "referral_matches",
    metadata,
    Column("referral_id", String(36), primary_key=True),
    Column("borough", String(100), nullable=True),
    Column("invited", Text, nullable=False, doc="JSON list of provider ids, cumulative"),
    Column("matched_at", String(40), nullable=False),
)

referral_invitations = Table(
    "referral_invitations",
    metadata,
    Column("referral_id", String(36), primary_key=True),
    Column("provider_id", String(100), primary_key=True, index=True),
    Column("invited_at", String(40), nullable=False),
)

provider_standing = Table(
    "referral_provider_standing",
    metadata,
    Column("provider_id", String(100), primary_key=True),
    Column("suspended", Boolean, nullable=False),
    Column("reason", Text, nullable=True),
    Column("updated_at", String(40), nullable=False),
)

referral_shortlists = Table(
    "referral_shortlists",
    metadata,
    Column("referral_id", String(36), primary_key=True),
    Column("policy_version", Integer, nullable=True),
    Column("entries", Text, nullable=False),
    Column("excluded", Text, nullable=False),
    Column("ranked_at", String(40), nullable=False),
)


def _json(value: Any) -> str:
    return dumps(value).decode()


# --- writing: the referral itself --------------------------------------------------------------


async def update_referral_view(conn: AsyncConnection, referral: Referral, envelopes: Sequence[Envelope]) -> None:
    """Rebuild the referral's rows from the aggregate (runs in the append's transaction).

    Who offered or withdrew (`submitted_by`, `withdrawn_by`) is the envelopes' `actorid`, not the
    aggregate's: it is kept from the `envelopes` just recorded (replay passes the whole stream) and
    read back onto the aggregate's offers, so a command's answer names them as the view does."""
    by = _offer_actors(envelopes)
    data = referral.to_data()
    await upsert(conn, referral_views, {
        "referral_id": referral.id,
        "borough": referral.borough,
        "status": referral.status,
        "offer_deadline": data["offer_deadline"],
        "raised_at": referral.raised_at,
        "version": referral.version,
        "referral": _json(await personal.seal(conn, referral.id, data)),
        "outcome": _json(_outcome(referral)),
    }, ["referral_id"])
    for offer in referral.offers.values():
        await upsert(conn, referral_offers, {
            "offer_id": offer.offer_id,
            "referral_id": referral.id,
            "provider_id": offer.provider_id,
            "weekly_fee_pence": offer.weekly_fee_pence,
            "start_date": offer.start_date.isoformat(),
            "notes": offer.notes,
            "status": offer.status,
            "submitted_at": offer.submitted_at,
            "withdrawal_reason": offer.withdrawal_reason,
            **by.get(offer.offer_id, {}),
        }, ["offer_id"])
    if referral.offers:
        rows = await conn.execute(select(referral_offers.c.offer_id, referral_offers.c.submitted_by,
                                         referral_offers.c.withdrawn_by)
                                  .where(referral_offers.c.referral_id == referral.id))
        for r in rows:
            if (known := referral.offers.get(r.offer_id)) is not None:
                known.submitted_by, known.withdrawn_by = r.submitted_by, r.withdrawn_by
    for decline in referral.declines.values():
        await upsert(conn, referral_declines, {
            "referral_id": referral.id, "provider_id": decline.provider_id,
            "reason": decline.reason, "note": decline.note,
        }, ["referral_id", "provider_id"])


def _offer_actors(envelopes: Sequence[Envelope]) -> dict[str, dict[str, str | None]]:
    """{offer id: {"submitted_by"/"withdrawn_by": actorid}} from offer-submitted / offer-withdrawn."""
    found: dict[str, dict[str, str | None]] = {}
    for e in envelopes:
        column = {"offer-submitted": "submitted_by", "offer-withdrawn": "withdrawn_by"}.get(e.type)
        if column is not None and e.data.get("offer_id"):
            found.setdefault(str(e.data["offer_id"]), {})[column] = e.actorid
    return found


def _outcome(referral: Referral) -> dict[str, Any]:
    if referral.status == "awarded":
        return {"awarded_offer_id": referral.awarded_offer_id, "justification": referral.justification}
    if referral.status == "closed":
        return {"close_reason": referral.close_reason, "unfilled": True}
    if referral.status == "withdrawn":
        return {"withdrawal_reason": referral.withdrawal_reason}
    return {}


# --- writing: facts learned from other services ------------------------------------------------


async def record_match(conn: AsyncConnection, referral_id: str, borough: str | None, invited: Sequence[str],
                       at: str) -> None:
    """`invited` is cumulative: once invited, a provider stays invited."""
    await upsert(conn, referral_matches, {
        "referral_id": referral_id, "borough": borough, "invited": _json(sorted(set(invited))), "matched_at": at,
    }, ["referral_id"])
    for provider_id in invited:
        await upsert(conn, referral_invitations, {
            "referral_id": referral_id, "provider_id": provider_id, "invited_at": at,
        }, ["referral_id", "provider_id"])


async def record_standing(conn: AsyncConnection, provider_id: str, suspended: bool, reason: str | None,
                          at: str) -> None:
    await upsert(conn, provider_standing, {
        "provider_id": provider_id, "suspended": suspended, "reason": reason, "updated_at": at,
    }, ["provider_id"])


async def record_shortlist(conn: AsyncConnection, referral_id: str, policy_version: int | None,
                           entries: Sequence[Mapping[str, Any]], excluded: Sequence[Mapping[str, Any]],
                           at: str) -> None:
    await upsert(conn, referral_shortlists, {
        "referral_id": referral_id, "policy_version": policy_version,
        "entries": _json(list(entries)), "excluded": _json(list(excluded)), "ranked_at": at,
    }, ["referral_id"])


# --- reading: inputs of commands ---------------------------------------------------------------


async def invitation_of(conn: AsyncConnection, referral_id: str, provider_id: str) -> Invitation:
    known = (await conn.execute(
        select(referral_matches.c.referral_id).where(referral_matches.c.referral_id == referral_id)
    )).first() is not None
    invited = (await conn.execute(
        select(referral_invitations.c.provider_id).where(and_(
            referral_invitations.c.referral_id == referral_id, referral_invitations.c.provider_id == provider_id))
    )).first() is not None
    return Invitation(known=known, invited=invited, suspended=await is_suspended(conn, provider_id))


async def is_suspended(conn: AsyncConnection, provider_id: str) -> bool:
    return bool((await conn.execute(
        select(provider_standing.c.suspended).where(provider_standing.c.provider_id == provider_id)
    )).scalar())


async def suspended_among(conn: AsyncConnection, provider_ids: Sequence[str]) -> frozenset[str]:
    if not provider_ids:
        return frozenset()
    rows = await conn.execute(select(provider_standing.c.provider_id).where(and_(
        provider_standing.c.provider_id.in_(list(provider_ids)), provider_standing.c.suspended.is_(True))))
    return frozenset(r.provider_id for r in rows)


async def shortlist_of(conn: AsyncConnection, referral_id: str) -> Shortlist | None:
    row = (await conn.execute(
        select(referral_shortlists).where(referral_shortlists.c.referral_id == referral_id))).first()
    if row is None:
        return None
    entries = sorted(loads(row.entries), key=lambda e: e.get("rank", 0))
    return Shortlist(
        ranked_offer_ids=tuple(str(e["offer_id"]) for e in entries),
        excluded_offer_ids=frozenset(str(e["offer_id"]) for e in loads(row.excluded) if e.get("offer_id")),
    )


async def referrals_due_for_closing(conn: AsyncConnection, now_text: str, limit: int = 100) -> list[str]:
    """Open referrals whose deadline has passed with no standing offer (the closer re-checks each)."""
    standing_offer = exists().where(and_(
        referral_offers.c.referral_id == referral_views.c.referral_id, referral_offers.c.status == "submitted"))
    rows = await conn.execute(
        select(referral_views.c.referral_id)
        .where(referral_views.c.status == "open", referral_views.c.offer_deadline <= now_text, ~standing_offer)
        .order_by(referral_views.c.offer_deadline).limit(limit))
    return [r.referral_id for r in rows]


# --- reading: views ----------------------------------------------------------------------------


def views_with_key() -> Any:
    """The view rows with their referral's sealing key (`sealing_key`, None once erased)."""
    return select(referral_views, personal.personal_keys.c.key.label("sealing_key")).outerjoin(
        personal.personal_keys, personal.personal_keys.c.referral_id == referral_views.c.referral_id)


def referral_of(row: Any) -> dict[str, Any]:
    """The `referral` object of a view row, its child's details opened (None once erased)."""
    return personal.unseal_with(row.sealing_key, loads(row.referral))


async def load_view_row(conn: AsyncConnection, referral_id: str) -> Any | None:
    return (await conn.execute(views_with_key().where(referral_views.c.referral_id == referral_id))).first()


async def offers_of(conn: AsyncConnection, referral_id: str, provider_id: str | None = None) -> list[dict[str, Any]]:
    query = select(referral_offers).where(referral_offers.c.referral_id == referral_id)
    if provider_id is not None:
        query = query.where(referral_offers.c.provider_id == provider_id)
    rows = await conn.execute(query.order_by(referral_offers.c.submitted_at, referral_offers.c.offer_id))
    return [_offer_view(r) for r in rows]


async def declines_of(conn: AsyncConnection, referral_id: str, provider_id: str | None = None) -> list[dict[str, Any]]:
    query = select(referral_declines).where(referral_declines.c.referral_id == referral_id)
    if provider_id is not None:
        query = query.where(referral_declines.c.provider_id == provider_id)
    rows = await conn.execute(query.order_by(referral_declines.c.provider_id))
    return [{"provider_id": r.provider_id, "reason": r.reason, "note": r.note} for r in rows]


async def is_invited(conn: AsyncConnection, referral_id: str, provider_id: str) -> bool:
    return (await conn.execute(select(referral_invitations.c.provider_id).where(and_(
        referral_invitations.c.referral_id == referral_id, referral_invitations.c.provider_id == provider_id)
    ))).first() is not None


def _offer_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.offer_id,
        "provider_id": row.provider_id,
        "weekly_fee_pence": row.weekly_fee_pence,
        "start_date": row.start_date,
        "notes": row.notes,
        "status": row.status,
        "submitted_at": row.submitted_at,
        "submitted_by": row.submitted_by,
        "withdrawn_by": row.withdrawn_by,
    }


def borough_view_of(referral: Referral) -> dict[str, Any]:
    """`borough_view` from the aggregate itself: what a command that just changed it answers, the
    same object the view's rows give: the referral and its outcome as stored (through the same JSON,
    so keys in the same order), offers in submission order, declines by provider."""
    offers = sorted(referral.offers.values(), key=lambda o: (o.submitted_at, o.offer_id))
    return {
        "id": referral.id,
        "status": referral.status,
        "version": referral.version,
        "raised_at": referral.raised_at,
        **loads(_json(referral.to_data())),
        **loads(_json(_outcome(referral))),
        "offers": [{"id": o.offer_id, "provider_id": o.provider_id, "weekly_fee_pence": o.weekly_fee_pence,
                    "start_date": o.start_date.isoformat(), "notes": o.notes, "status": o.status,
                    "submitted_at": o.submitted_at, "submitted_by": o.submitted_by,
                    "withdrawn_by": o.withdrawn_by} for o in offers],  # as `_offer_view` gives them
        "declines": [d.to_view() for d in sorted(referral.declines.values(), key=lambda d: d.provider_id)],
    }


def borough_view(row: Any, offers: list[dict[str, Any]], declines: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything, for the owning borough."""
    return {
        "id": row.referral_id,
        "status": row.status,
        "version": row.version,
        "raised_at": row.raised_at,
        **referral_of(row),
        **loads(row.outcome or "{}"),
        "offers": offers,
        "declines": declines,
    }


REDACTED_FIELDS = ("child_ref", "birth_date", "preferred_provider_id")


def redact(referral: Mapping[str, Any], today: date) -> dict[str, Any]:
    """The referral as an invited provider may see it: no identity, age in years, district only."""
    view = {k: v for k, v in referral.items() if k not in REDACTED_FIELDS}
    birth_date = referral.get("birth_date")
    if birth_date:
        view["age"] = age_in_years(date.fromisoformat(birth_date), today)
    location = referral.get("location")
    view["location"] = {"district": location.get("district")} if location else None
    return view


def provider_view(row: Any, own_offers: list[dict[str, Any]], own_declines: list[dict[str, Any]],
                  today: date) -> dict[str, Any]:
    """For an invited provider: redacted unless one of its offers was awarded; only its own offers."""
    referral = referral_of(row)
    outcome = loads(row.outcome or "{}")
    awarded_to_me = any(o["status"] == "awarded" for o in own_offers)
    content = referral if awarded_to_me else redact(referral, today)
    return {
        "id": row.referral_id,
        "status": row.status,
        "raised_at": row.raised_at,
        **content,
        "redacted": not awarded_to_me,
        **({"awarded_offer_id": outcome.get("awarded_offer_id")} if awarded_to_me else {}),
        "offers": own_offers,
        "declines": own_declines,
    }


async def list_for_borough(conn: AsyncConnection, borough: str, status: str | None, limit: int,
                           offset: int) -> list[Any]:
    query = views_with_key().where(referral_views.c.borough == borough)
    if status:
        query = query.where(referral_views.c.status == status)
    rows = await conn.execute(
        query.order_by(referral_views.c.raised_at.desc(), referral_views.c.referral_id).limit(limit).offset(offset))
    return list(rows)


def overseer_view(row: Any, offers: list[dict[str, Any]], declines: list[dict[str, Any]],
                  today: date) -> dict[str, Any]:
    """For commissioners and auditors, across every borough: the referral redacted as an invited
    provider sees it (no child_ref, birth date or preferred provider; age in years, district only),
    with its borough, outcome, offers and declines."""
    return {
        "id": row.referral_id,
        "status": row.status,
        "version": row.version,
        "raised_at": row.raised_at,
        **redact(referral_of(row), today),
        "borough": row.borough,
        **loads(row.outcome or "{}"),
        "redacted": True,
        "offers": offers,
        "declines": declines,
    }


async def list_all(conn: AsyncConnection, status: str | None, limit: int, offset: int) -> list[Any]:
    """Every borough's referrals, newest first (commissioners and auditors)."""
    query = views_with_key()
    if status:
        query = query.where(referral_views.c.status == status)
    rows = await conn.execute(
        query.order_by(referral_views.c.raised_at.desc(), referral_views.c.referral_id).limit(limit).offset(offset))
    return list(rows)


async def list_for_provider(conn: AsyncConnection, provider_id: str, status: str | None, limit: int,
                            offset: int) -> list[Any]:
    query = views_with_key().join(
        referral_invitations, referral_invitations.c.referral_id == referral_views.c.referral_id
    ).where(referral_invitations.c.provider_id == provider_id)
    if status:
        query = query.where(referral_views.c.status == status)
    rows = await conn.execute(
        query.order_by(referral_views.c.raised_at.desc(), referral_views.c.referral_id).limit(limit).offset(offset))
    return list(rows)


# --- the audit trail: what other services decided and delivered about each referral -------------

referral_audit_trail = Table(
    "referral_audit_trail",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("referral_id", String(36), nullable=False, index=True),
    Column("body", Text, nullable=False, doc="the CloudEvent as received"),
)

AUDITED_TYPES = ("referral-matched", "shortlist-ranked", "decision-recorded", "notification-requested",
                 "delivery-recorded")


async def record_for_audit(conn: AsyncConnection, event: Envelope) -> None:
    """Keep matching's decisions and notification outcomes for the referral's evidence pack."""
    if event.type not in AUDITED_TYPES:
        return
    referral_id = event.data.get("referral_id") or (event.subject if event.type != "notification-requested" else None)
    if not referral_id:
        return
    await upsert(conn, referral_audit_trail, {"event_id": event.id, "referral_id": str(referral_id),
                                              "body": event.to_json().decode()}, ["event_id"])


async def audit_trail_of(conn: AsyncConnection, referral_id: str) -> list[Envelope]:
    rows = (await conn.execute(select(referral_audit_trail.c.body)
                               .where(referral_audit_trail.c.referral_id == referral_id))).all()
    return [Envelope.from_json(r.body) for r in rows]
