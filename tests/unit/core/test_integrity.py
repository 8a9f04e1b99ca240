"""`verify_store`: the hash chain names the first hand-edited event."""
from __future__ import annotations

from sqlalchemy import select

from shared.aggregate import NewEvent
from shared.db import Database
from shared.migrations import create_core_schema
from shared.store import EventStore


async def test_verify_detects_a_hand_edited_event(tmp_path) -> None:
    from sqlalchemy import update

    from shared.integrity import verify_store
    from shared.schema import events

    db = Database(f"sqlite+aiosqlite:///{tmp_path}/v.db")
    await create_core_schema(db)
    store = EventStore(db, "placematch/test")
    async with db.transaction() as conn:
        for i in range(3):
            await store.append(conn, f"s-{i % 2}", None, [NewEvent("thing-made", {"fee": 100 + i})])
    assert (await verify_store(db)).ok
    async with db.transaction() as conn:
        row = (await conn.execute(select(events).where(events.c.position == 2))).one()
        await conn.execute(update(events).where(events.c.position == 2).values(body=row.body.replace("101", "99")))
    report = await verify_store(db)
    assert not report.ok and report.broken.position == 2 and "stream hash" in report.broken.reason
    await db.dispose()
