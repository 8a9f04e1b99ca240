"""Each service's Alembic history builds exactly the tables its code declares (no drift)."""
from __future__ import annotations

import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData

from shared.db import Database
from shared.migrations import upgrade
from shared.schema import metadata as core_metadata
from shared.settings import SERVICES


def declared(service: str) -> MetaData:
    """The core tables plus every table the service's code declares."""
    sources = [core_metadata, importlib.import_module(f"services.{service}.projections").metadata]
    if service == "referral":
        sources.append(importlib.import_module("services.referral.personal").keys_metadata)
    combined = MetaData()
    for source in sources:
        for table in source.tables.values():
            if table.name not in combined.tables:
                table.to_metadata(combined)
    return combined


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_match_the_declared_tables(service: str, tmp_path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/{service}.db")
    await upgrade(db, service)
    metadata = declared(service)

    def diff(sync_conn):  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(sync_conn, opts={"compare_type": False})
        return [d for d in compare_metadata(context, metadata)
                if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name.startswith("alembic_version"))]

    async with db.engine.connect() as conn:
        differences = await conn.run_sync(diff)
    await db.dispose()
    assert differences == [], f"{service}: migrations and code disagree: {differences}"


# --- enrolment_0002: one active provider per URN --------------------------------------------------


def _provider_row(provider_id: str, urn: str, status: str) -> dict[str, object]:
    return {"provider_id": provider_id, "name": provider_id, "urn": urn, "kind": "childrens_home",
            "status": status, "quality_score": None, "capacity": 1, "version": 1, "view": "{}",
            "applied_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}


async def _migrate_to(db: Database, service: str, revision: str, *, down: bool = False) -> None:
    from alembic import command

    from shared.migrations import alembic_config

    def run(sync_conn):  # type: ignore[no-untyped-def]
        cfg = alembic_config(service)
        cfg.attributes["connection"] = sync_conn
        (command.downgrade if down else command.upgrade)(cfg, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


async def test_enrolment_allows_one_provider_per_urn_that_is_not_rejected(tmp_path) -> None:
    from sqlalchemy.exc import IntegrityError

    from services.enrolment.projections import providers, violates_active_urn

    db = Database(f"sqlite+aiosqlite:///{tmp_path}/enrolment.db")
    await upgrade(db, "enrolment")
    async with db.transaction() as conn:
        await conn.execute(providers.insert(), [_provider_row("p-1", "100001", "rejected"),
                                                _provider_row("p-2", "100001", "rejected"),
                                                _provider_row("p-3", "100001", "approved"),
                                                _provider_row("p-4", "100002", "applied")])
    for row, is_urn in [(_provider_row("p-5", "100001", "applied"), True),
                        (_provider_row("p-5", "100001", "suspended"), True),
                        (_provider_row("p-4", "100009", "applied"), False)]:  # primary key instead
        with pytest.raises(IntegrityError) as refused:
            async with db.transaction() as conn:
                await conn.execute(providers.insert(), [row])
        assert violates_active_urn(refused.value) is is_urn, refused.value
    async with db.transaction() as conn:  # rejected rows are outside the index
        await conn.execute(providers.insert(), [_provider_row("p-6", "100001", "rejected")])
    await db.dispose()


async def test_enrolment_0002_names_the_duplicates_it_cannot_index(tmp_path) -> None:
    """A database where the old race left two active providers with one URN: the upgrade stops
    with their ids (nothing half-done), and succeeds once all but one are rejected."""
    from sqlalchemy import inspect, update

    from services.enrolment.projections import ACTIVE_URN_INDEX, providers

    db = Database(f"sqlite+aiosqlite:///{tmp_path}/enrolment.db")
    await _migrate_to(db, "enrolment", "enrolment_0001")
    async with db.transaction() as conn:
        await conn.execute(providers.insert(), [_provider_row("p-1", "100001", "approved"),
                                                _provider_row("p-2", "100001", "applied"),
                                                _provider_row("p-3", "100001", "rejected")])
    with pytest.raises(RuntimeError, match="URN 100001: provider p-1; URN 100001: provider p-2\\)"):
        await upgrade(db, "enrolment")
    async with db.transaction() as conn:
        await conn.execute(update(providers).where(providers.c.provider_id == "p-2")
                           .values(status="rejected"))
    await upgrade(db, "enrolment")

    def index_names(sync_conn):  # type: ignore[no-untyped-def]
        return {ix["name"] for ix in inspect(sync_conn).get_indexes("enrolment_providers")}

    async with db.engine.connect() as conn:
        assert ACTIVE_URN_INDEX in await conn.run_sync(index_names)
    await _migrate_to(db, "enrolment", "enrolment_0001", down=True)
    async with db.engine.connect() as conn:
        assert ACTIVE_URN_INDEX not in await conn.run_sync(index_names)
    await db.dispose()
