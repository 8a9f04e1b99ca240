"""The event store on SQLite: append, read back, optimistic concurrency (the contract for both backends is
test_store_contract)."""
from __future__ import annotations

import pytest

from shared.aggregate import NewEvent
from shared.db import Database
from shared.errors import ConcurrencyError
from shared.migrations import create_core_schema
from shared.store import EventStore


async def test_append_read_and_concurrency(tmp_path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/s.db")
    await create_core_schema(db)
    store = EventStore(db, "placematch/test")
    async with db.transaction() as conn:
        recorded = await store.append(conn, "s-1", 0,
                                      [NewEvent("thing-made", {"a": 1}), NewEvent("thing-made", {"a": 2})])
    assert [e.sequence for e in recorded] == [1, 2]
    with pytest.raises(ConcurrencyError):
        async with db.transaction() as conn:
            await store.append(conn, "s-1", 1, [NewEvent("thing-made", {"a": 3})])
    stream = await store.read_stream("s-1")
    assert [e.data["a"] for e in stream] == [1, 2]
    assert stream[0].source == "placematch/test" and stream[0].subject == "s-1"
    everything = await store.read_all()
    assert [e.position for e in everything] == sorted(e.position for e in everything)
    await db.dispose()
