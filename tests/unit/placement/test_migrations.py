"""The placement service's Alembic history builds exactly the tables its code declares, and goes
down and up again (until `placement` joins `shared.settings.SERVICES`, which the lead wires)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import inspect

from shared.db import Database
from shared.migrations import alembic_config, upgrade
from tests.unit.core.test_migrations import test_migrations_match_the_declared_tables as check_declared


async def test_placement_migrations_match_the_declared_tables(tmp_path: Path) -> None:
    await check_declared("placement", tmp_path)


async def test_placement_migrations_go_down_and_up(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/placement.db")
    await upgrade(db, "placement")

    def down(sync_conn: Any) -> set[str]:
        cfg = alembic_config("placement")
        cfg.attributes["connection"] = sync_conn
        command.downgrade(cfg, "base")
        return set(inspect(sync_conn).get_table_names())

    async with db.engine.begin() as conn:
        left = await conn.run_sync(down)
    assert not {t for t in left if t.startswith("placement_")}
    await upgrade(db, "placement")
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"placement_placements", "placement_referral_facts", "placement_shortlists", "events"} <= tables
    await db.dispose()
