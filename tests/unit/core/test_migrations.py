"""Each service's Alembic history builds exactly the tables its code declares (no drift)."""
from __future__ import annotations

import importlib
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData

from services import SERVICES
from shared.db import Database
from shared.migrations import upgrade
from shared.schema import metadata as core_metadata


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


# --- referral_0004: the child's details sealed at rest ----------------------------------------------


async def test_referral_0004_seals_what_an_older_database_holds_in_clear(tmp_path) -> None:
    """A view and a stored answer from before sealing hold the child in clear: the upgrade seals
    them under the referral's key (or, its key erased, leaves the details out and answers
    `answer_erased`); the downgrade opens them again. (On PostgreSQL: tests/integration.)"""
    await check_referral_0004(Database(f"sqlite+aiosqlite:///{tmp_path}/referral.db"))


async def check_referral_0004(db: Database) -> None:
    import orjson
    from cryptography.fernet import Fernet
    from sqlalchemy import select

    from services.referral.personal import personal_keys, unseal_with
    from services.referral.projections import referral_views
    from shared.idempotency import idempotency_effects, idempotency_keys

    await _migrate_to(db, "referral", "referral_0003")
    key = Fernet.generate_key().decode()
    view = {"child_ref": "CR-2026-0042", "birth_date": "2014-05-02", "age_at_start": 12, "gender": "male"}
    answer = orjson.dumps({"id": "r-live", **view})
    async with db.transaction() as conn:
        await conn.execute(personal_keys.insert(), [{"referral_id": "r-live", "key": key},
                                                    {"referral_id": "r-erased", "key": None}])
        await conn.execute(referral_views.insert(), [
            {"referral_id": rid, "borough": "croydon", "status": "open", "offer_deadline": "2027-07-01T17:00:00Z",
             "version": 1, "referral": orjson.dumps(view).decode()} for rid in ("r-live", "r-erased")])
        await conn.execute(idempotency_keys.insert(), [
            {"scope": f"borough:croydon:x POST /referrals/{rid}", "key": "k", "fingerprint": "f", "status": 200,
             "headers": "[]", "body": answer, "created_at": "2026-12-01T00:00:00Z"} for rid in ("r-live", "r-erased")])
        await conn.execute(idempotency_effects.insert(), [
            {"scope": f"borough:croydon:x POST /referrals/{rid}", "key": "k", "effect": rid}
            for rid in ("r-live", "r-erased")])

    async def stored() -> tuple[dict[str, Any], dict[str, Any]]:
        async with db.read() as conn:
            views = {r.referral_id: orjson.loads(r.referral) for r in await conn.execute(select(referral_views))}
            answers = {r.scope.rsplit("/", 1)[1]: r for r in await conn.execute(select(idempotency_keys))}
        return views, answers

    await upgrade(db, "referral")
    views, answers = await stored()
    assert set(views["r-live"]["child_ref"]) == {"sealed"} and views["r-live"]["gender"] == "male"
    assert unseal_with(key, views["r-live"])["child_ref"] == "CR-2026-0042"
    assert views["r-erased"]["child_ref"] is None and views["r-erased"]["birth_date"] is None
    assert answers["r-live"].sealed_under == "r-live" and b"CR-2026-0042" not in answers["r-live"].body
    assert Fernet(key.encode()).decrypt(answers["r-live"].body) == answer
    erased = orjson.loads(answers["r-erased"].body)
    assert answers["r-erased"].status == 409 and erased["rule"] == "answer_erased" and erased["effect"] == "r-erased"

    await _migrate_to(db, "referral", "referral_0003", down=True)
    views, answers = await stored()
    assert views["r-live"]["child_ref"] == "CR-2026-0042" and answers["r-live"].body == answer
    await db.dispose()


@pytest.mark.parametrize("service, before", [("referral", "referral_0002"), ("enrolment", "enrolment_0002"),
                                             ("matching", "0001"), ("notification", "0001")])
async def test_core_schema_2_adds_its_columns_to_an_older_database(service: str, before: str, tmp_path) -> None:
    from sqlalchemy import inspect

    def columns(sync_conn):  # type: ignore[no-untyped-def]
        found = inspect(sync_conn)
        return {c["name"] for c in found.get_columns("idempotency_keys")} | {
            c["name"] for c in found.get_columns("idempotency_effects")}

    db = Database(f"sqlite+aiosqlite:///{tmp_path}/{service}.db")
    await upgrade(db, service)
    await _migrate_to(db, service, before, down=True)
    async with db.engine.connect() as conn:
        assert not {"sealed_under", "created"} & await conn.run_sync(columns)
    await upgrade(db, service)
    async with db.engine.connect() as conn:
        assert {"sealed_under", "created"} <= await conn.run_sync(columns)
    await db.dispose()
