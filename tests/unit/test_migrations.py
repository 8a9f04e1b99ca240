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
