"""Alembic per service: one history in services/<service>/migrations, run at start-up or by CLI.

A service's `migrations/env.py` is just `from shared.migrations import run_env; run_env(metadata)`.
Its first revision calls `create_core_tables()` and then creates its own read-model tables.
"""
from __future__ import annotations

import asyncio
import weakref
from pathlib import Path
from typing import Any

from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import Column, MetaData, String, pool
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import Database
from shared.schema import metadata as core_metadata

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


LATER_CORE_TABLES = ("rate_limits", "actors")
"""Core tables added after version 1, each by its own function below and a revision per service."""


def create_core_tables() -> None:
    """The core tables as shared/schema.py declares them now (version 1 when first written).

    A later change to shared/schema.py must come with a new function here, which adds what an
    older database lacks, and a new revision in every service that calls it (`add_core_columns_2`).
    """
    tables = [t for t in core_metadata.sorted_tables if t.name not in LATER_CORE_TABLES]
    core_metadata.create_all(op.get_bind(), tables=tables, checkfirst=True)


def create_rate_limit_table() -> None:
    """Core schema version 3: the rate-limit counters (`shared.limits`), shared by a service's replicas."""
    from shared.schema import rate_limits

    rate_limits.create(op.get_bind(), checkfirst=True)
    for index in rate_limits.indexes:
        index.create(op.get_bind(), checkfirst=True)


def create_actors_table() -> None:
    """Core schema version 4: who each `actorid` is (name, username) for the audit record (issue 17)."""
    from shared.schema import actors

    actors.create(op.get_bind(), checkfirst=True)


def drop_actors_table() -> None:
    from shared.schema import actors

    actors.drop(op.get_bind(), checkfirst=True)


def drop_rate_limit_table() -> None:
    from shared.schema import rate_limits

    rate_limits.drop(op.get_bind(), checkfirst=True)


CORE_COLUMNS_2 = (("idempotency_keys", "sealed_under"), ("idempotency_effects", "created"))


def add_core_columns_2() -> None:
    """Core schema version 2: a stored answer sealed under its stream's key
    (`idempotency_keys.sealed_under`), and what a request created inside its stream
    (`idempotency_effects.created`). A database made by `create_core_tables` since has them."""
    inspector = sa_inspect(op.get_bind())
    for table, column in CORE_COLUMNS_2:
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            with op.batch_alter_table(table) as batch:
                batch.add_column(Column(column, String(100), nullable=True))


def drop_core_columns_2() -> None:
    for table, column in CORE_COLUMNS_2:
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column)


async def create_core_schema(db: Database) -> None:
    """Core tables without Alembic, for tests of the shared core itself."""
    async with db.engine.begin() as conn:
        await conn.run_sync(core_metadata.create_all)


def alembic_config(service: str, url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    cfg.set_main_option("version_table", f"alembic_version_{service}")
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


_alembic_locks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]" = weakref.WeakKeyDictionary()
"""Alembic keeps the running migration in module globals (`alembic.op`, `alembic.context`), so
services started in one process (`placematch up`) must migrate one at a time."""


MIGRATION_LOCK_KEY = 0x706C6D67  # "plmg"


async def upgrade(db: Database, service: str) -> None:
    """Bring the service's database to the newest revision (inside the running event loop).

    On PostgreSQL the migration holds an advisory lock until it commits: replicas starting
    together on one database migrate one after the other (the later ones find it at head), rather
    than each creating the same tables and all but one failing to start."""

    def _run(sync_conn: Any) -> None:
        cfg = alembic_config(service)
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, "head")

    lock = _alembic_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock, db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        await conn.run_sync(_run)


def run_env(target_metadata: MetaData | None = None) -> None:
    """Body of every service's env.py: online migrations on the given or configured connection."""
    cfg = context.config
    version_table = cfg.get_main_option("version_table") or "alembic_version"

    def _migrate(connection: Any) -> None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          version_table=version_table, render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()

    connection = cfg.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return

    async def _standalone() -> None:
        engine = create_async_engine(cfg.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
        async with engine.begin() as conn:
            await conn.run_sync(_migrate)
        await engine.dispose()

    asyncio.run(_standalone())
