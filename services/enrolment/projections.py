"""Read models of the enrolment service: the provider list and its lots, for `GET /providers`.

They are updated in the same transaction as the events that change them (`update_provider_view`
is every command's `project`, service.py), so a listing never lags behind a command. A single
provider is always read from its event stream, the source of truth.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text, delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import upsert
from shared.events import Envelope, dumps, loads

from .domain import PROVIDER_APPLIED, Provider

metadata = MetaData()

providers = Table(
    "enrolment_providers",
    metadata,
    Column("provider_id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("urn", String(20), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("status", String(20), nullable=False),
    Column("quality_score", String(10), nullable=True, doc="2 places, e.g. '80.00'"),
    Column("capacity", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("view", Text, nullable=False, doc="The provider's view as JSON (what GET returns)."),
    Column("applied_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
)
Index("ix_enrolment_providers_status", providers.c.status)
Index("ix_enrolment_providers_urn", providers.c.urn)
ACTIVE_URN_INDEX = "uq_enrolment_providers_active_urn"
"""One provider per Ofsted URN that is not rejected: two simultaneous applications with the same
URN cannot both commit (the loser's whole transaction, its events included, rolls back)."""
_NOT_REJECTED = text("status <> 'rejected'")
Index(ACTIVE_URN_INDEX, providers.c.urn, unique=True,
      sqlite_where=_NOT_REJECTED, postgresql_where=_NOT_REJECTED)

provider_lots = Table(
    "enrolment_provider_lots",
    metadata,
    Column("provider_id", String(36), primary_key=True),
    Column("lot", String(10), primary_key=True),
)
Index("ix_enrolment_provider_lots_lot", provider_lots.c.lot)


def provider_view(provider: Provider) -> dict[str, Any]:
    """What `GET /providers/{id}` returns: profile at top level, status, score and evidence."""
    assert provider.profile is not None
    score = provider.score
    return {
        "id": provider.id,
        "status": str(provider.status),
        "quality_score": provider.quality_score,
        **provider.profile.to_data(),
        "vacancies": provider.vacancies,
        "placements_held": provider.placements_held,
        "score": None if score is None else {
            "quality_score": provider.quality_score,
            "inspection_score": score.to_data()["inspection_score"],
            "outcomes_score": score.to_data()["outcomes_score"],
            "policy_version": score.policy_version,
        },
        "inspections": [inspection.to_data() for inspection in provider.inspections],
        "outcomes": [record.to_data() for record in provider.outcomes],
        "suspension": None if provider.suspension is None else {
            "reason": provider.suspension.reason, "automatic": provider.suspension.automatic},
        "rejection_reason": provider.rejection_reason,
        "approval_blocked_by": provider.blocking_reason,
        "version": provider.version,
    }


async def update_provider_view(conn: AsyncConnection, provider: Provider,
                               envelopes: Sequence[Envelope]) -> None:
    """`project` of every command: upsert the provider's row and its lots."""
    if not envelopes or provider.profile is None:
        return
    view = provider_view(provider)
    last = envelopes[-1].time
    applied_at = envelopes[0].time if envelopes[0].type == PROVIDER_APPLIED else None
    values: dict[str, Any] = {
        "provider_id": provider.id, "name": provider.profile.name, "urn": provider.profile.urn,
        "kind": provider.profile.kind, "status": str(provider.status),
        "quality_score": provider.quality_score, "capacity": provider.profile.capacity,
        "version": provider.version, "view": dumps(view).decode(), "updated_at": last,
    }
    if applied_at is not None:
        values["applied_at"] = applied_at
        await upsert(conn, providers, values, ["provider_id"])
    else:
        await conn.execute(providers.update()
                           .where(providers.c.provider_id == provider.id).values(**values))
    await conn.execute(delete(provider_lots).where(provider_lots.c.provider_id == provider.id))
    await conn.execute(provider_lots.insert(), [{"provider_id": provider.id, "lot": lot}
                                                for lot in provider.profile.lots])


async def list_providers(conn: AsyncConnection, *, status: str | None = None,
                         lot: str | None = None, limit: int = 100,
                         offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Providers (views) filtered by status and lot, by name; with the total matching count."""
    query = select(providers.c.view)
    if status is not None:
        query = query.where(providers.c.status == status)
    if lot is not None:
        query = query.where(providers.c.provider_id.in_(
            select(provider_lots.c.provider_id).where(provider_lots.c.lot == lot)))
    total = (await conn.execute(select(func.count()).select_from(
        query.with_only_columns(providers.c.provider_id).subquery()))).scalar_one()
    rows = (await conn.execute(query.order_by(providers.c.name, providers.c.provider_id)
                               .limit(limit).offset(offset))).all()
    return [loads(row.view) for row in rows], total


def violates_active_urn(error: IntegrityError) -> bool:
    """True when `error` is the `ACTIVE_URN_INDEX` refusing a second active provider for a URN.

    PostgreSQL (asyncpg) names the index; SQLite names the indexed column instead.
    """
    name = getattr(error.orig.__cause__, "constraint_name", None) if error.orig else None
    if name is not None:
        return name == ACTIVE_URN_INDEX
    message = str(error.orig)
    return (ACTIVE_URN_INDEX in message
            or "UNIQUE constraint failed: enrolment_providers.urn" in message)


async def active_provider_with_urn(conn: AsyncConnection, urn: str) -> str | None:
    """The id of a provider with this URN that is not rejected, if any (one enrolment per URN)."""
    row = (await conn.execute(select(providers.c.provider_id).where(
        (providers.c.urn == urn) & (providers.c.status != "rejected")).limit(1))).first()
    return row.provider_id if row else None
