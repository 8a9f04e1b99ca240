"""One contract for EventStore, held by both backends: SQLite (embedded, here, in `make unit`) and
PostgreSQL (production: tests/integration/test_core_store_contract.py runs these tests on it).

Append and read back, optimistic concurrency (a stale expected version writes nothing), global
order for `read_all`, one winner among concurrent appends at the same version, and a hash chain
that anyone can recompute from the stored bodies with `shared.store.link_hash`.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from shared.aggregate import NewEvent
from shared.db import Database
from shared.errors import ConcurrencyError
from shared.events import Envelope
from shared.migrations import create_core_schema
from shared.schema import events as events_table
from shared.schema import outbox as outbox_table
from shared.store import GENESIS, EventStore, link_hash

TOPIC = "placematch.contract"


async def open_store(url: str) -> AsyncIterator[EventStore]:
    """An EventStore on a fresh database at `url`, with the core schema."""
    db = Database(url)
    await create_core_schema(db)
    try:
        yield EventStore(db, "placematch/contract")
    finally:
        await db.dispose()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    async for opened in open_store(f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}"):
        yield opened


async def _count(store: EventStore, table) -> int:
    async with store.db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def _append(store: EventStore, stream: str, expected: int | None, *payloads: dict) -> list[Envelope]:
    async with store.db.transaction() as conn:
        return await store.append(conn, stream, expected, [NewEvent("thing-made", p) for p in payloads], topic=TOPIC)


async def test_append_then_read_stream(store: EventStore) -> None:
    recorded = await _append(store, "s-1", 0, {"a": 1}, {"a": 2})
    await _append(store, "other", 0, {"a": 99})
    recorded += await _append(store, "s-1", 2, {"a": 3})

    assert [e.sequence for e in recorded] == [1, 2, 3]
    assert all(e.position is not None for e in recorded)
    stream = await store.read_stream("s-1")
    assert [e.data["a"] for e in stream] == [1, 2, 3]
    assert [e.sequence for e in stream] == [1, 2, 3]
    assert [e.id for e in stream] == [e.id for e in recorded]
    assert [e.position for e in stream] == [e.position for e in recorded]
    assert {e.subject for e in stream} == {"s-1"} and {e.source for e in stream} == {"placematch/contract"}
    assert await store.read_stream("nobody") == []
    async with store.db.read() as conn:
        assert await store.stream_version(conn, "s-1") == 3
        assert await store.stream_version(conn, "nobody") == 0
    # every appended event with a topic is in the outbox, keyed by its stream
    async with store.db.read() as conn:
        rows = (await conn.execute(select(outbox_table).order_by(outbox_table.c.position))).all()
    assert len(rows) == 4 and {r.topic for r in rows} == {TOPIC}
    by_position = {r.position: r for r in rows}
    for envelope in recorded:
        row = by_position[envelope.position]
        assert row.key == "s-1"
        assert Envelope.from_json(row.payload).id == envelope.id


@pytest.mark.parametrize("stale", [0, 1, 3])
async def test_stale_expected_version_raises_and_writes_nothing(store: EventStore, stale: int) -> None:
    await _append(store, "s-1", 0, {"a": 1}, {"a": 2})
    events_before, outbox_before = await _count(store, events_table), await _count(store, outbox_table)

    with pytest.raises(ConcurrencyError):
        await _append(store, "s-1", stale, {"a": "lost-1"}, {"a": "lost-2"})

    assert [e.data["a"] for e in await store.read_stream("s-1")] == [1, 2]
    assert await _count(store, events_table) == events_before
    assert await _count(store, outbox_table) == outbox_before
    # the store is still usable at the right version
    assert [e.sequence for e in await _append(store, "s-1", 2, {"a": 3})] == [3]


async def test_a_conflict_in_the_callers_transaction_rolls_back_its_other_appends(store: EventStore) -> None:
    await _append(store, "s-1", 0, {"a": 1})
    with pytest.raises(ConcurrencyError):
        async with store.db.transaction() as conn:
            await store.append(conn, "s-2", 0, [NewEvent("thing-made", {"a": "with-the-conflict"})], topic=TOPIC)
            await store.append(conn, "s-1", 0, [NewEvent("thing-made", {"a": "stale"})], topic=TOPIC)
    assert await store.read_stream("s-2") == []
    assert await _count(store, events_table) == 1 and await _count(store, outbox_table) == 1


async def test_unique_stream_version_is_enforced_by_the_schema(store: EventStore) -> None:
    """The UNIQUE(stream_id, version) constraint holds even for a writer that bypasses the store."""
    [first] = await _append(store, "s-1", 0, {"a": 1})
    with pytest.raises(IntegrityError):
        async with store.db.transaction() as conn:
            await conn.execute(events_table.insert().values(
                event_id="00000000-0000-0000-0000-000000000001", stream_id="s-1", version=1, type="thing-made",
                time=first.time, body="{}", stream_hash=GENESIS, chain_hash=GENESIS))
    assert [e.id for e in await store.read_stream("s-1")] == [first.id]


async def test_read_all_is_in_position_order_and_honours_after_and_limit(store: EventStore) -> None:
    for round_ in range(4):
        for stream in ("a", "b", "c"):
            await _append(store, stream, round_, {"round": round_, "stream": stream})
    everything = await store.read_all()
    assert len(everything) == 12
    positions = [e.position for e in everything]
    assert positions == sorted(positions) and len(set(positions)) == 12
    assert [(e.data["round"], e.data["stream"]) for e in everything] == [
        (r, s) for r in range(4) for s in ("a", "b", "c")]

    pivot = positions[4]
    after = await store.read_all(after=pivot)
    assert [e.position for e in after] == positions[5:]
    assert [e.position for e in await store.read_all(after=pivot, limit=3)] == positions[5:8]
    assert await store.read_all(after=positions[-1]) == []
    assert [e.id for e in await store.read_all(after=0, limit=12)] == [e.id for e in everything]


async def test_concurrent_appends_at_the_same_version_have_exactly_one_winner(store: EventStore) -> None:
    await _append(store, "contested", 0, {"who": "founder"})
    contenders = 8
    # Everyone read version 1 and appends after it. On PostgreSQL every contender has its
    # transaction open before any of them appends; SQLite serialises write transactions in-process,
    # so there they only start together.
    barrier = asyncio.Barrier(contenders)
    inside = not store.db.is_sqlite

    async def contend(n: int) -> str:
        if not inside:
            await barrier.wait()
        try:
            async with store.db.transaction() as conn:
                if inside:
                    await barrier.wait()
                await store.append(conn, "contested", 1, [NewEvent("thing-made", {"who": n})], topic=TOPIC)
            return "won"
        except ConcurrencyError:
            return "lost"

    async with asyncio.timeout(60):
        outcomes = await asyncio.gather(*(contend(n) for n in range(contenders)))

    assert sorted(outcomes) == ["lost"] * (contenders - 1) + ["won"]
    stream = await store.read_stream("contested")
    assert [e.sequence for e in stream] == [1, 2]
    assert stream[1].data["who"] == outcomes.index("won")
    assert await _count(store, events_table) == 2 and await _count(store, outbox_table) == 2


async def test_hash_columns_chain_and_can_be_recomputed(store: EventStore) -> None:
    """stream_hash links each event to its stream's previous one, chain_hash to the previous event
    in global order; both recompute from the stored bodies, also after concurrent writers."""
    async def writer(w: int) -> None:
        for i in range(6):
            stream = f"w{w}-{i % 2}"
            async with store.db.transaction() as conn:
                version = await store.stream_version(conn, stream)
                await store.append(conn, stream, version, [NewEvent("thing-made", {"w": w, "i": i}),
                                                           NewEvent("thing-noted", {"w": w, "i": i})], topic=TOPIC)

    async with asyncio.timeout(60):
        await asyncio.gather(*(writer(w) for w in range(5)))

    async with store.db.read() as conn:
        rows = (await conn.execute(select(events_table).order_by(events_table.c.position))).all()
    assert len(rows) == 5 * 6 * 2

    chain = GENESIS
    stream_heads: dict[str, str] = {}
    stream_versions: dict[str, int] = {}
    for row in rows:
        chain = link_hash(chain, row.body)
        assert row.chain_hash == chain, f"chain broken at position {row.position}"
        stream_heads[row.stream_id] = link_hash(stream_heads.get(row.stream_id, GENESIS), row.body)
        assert row.stream_hash == stream_heads[row.stream_id], f"stream hash broken at position {row.position}"
        stream_versions[row.stream_id] = stream_versions.get(row.stream_id, 0) + 1
        assert row.version == stream_versions[row.stream_id]
        # the body is the canonical CloudEvent JSON: parsing and writing it back gives the same text
        envelope = Envelope.from_json(row.body)
        assert envelope.to_json().decode() == row.body
        assert (envelope.id, envelope.subject, envelope.sequence, envelope.type) == (
            row.event_id, row.stream_id, row.version, row.type)

    # a tampered body no longer matches its recorded hashes
    victim = rows[len(rows) // 2]
    previous = rows[len(rows) // 2 - 1]
    assert link_hash(previous.chain_hash, victim.body.replace('"i":', '"i" :')) != victim.chain_hash


def _assert_chain(rows: list) -> None:
    chain = GENESIS
    stream_heads: dict[str, str] = {}
    for row in rows:
        chain = link_hash(chain, row.body)
        assert row.chain_hash == chain, f"chain broken at position {row.position}"
        stream_heads[row.stream_id] = link_hash(stream_heads.get(row.stream_id, GENESIS), row.body)
        assert row.stream_hash == stream_heads[row.stream_id], f"stream hash broken at position {row.position}"


async def test_several_appends_in_one_transaction_chain_like_separate_ones(store: EventStore) -> None:
    """A transaction's later appends reuse the lock it holds and the chain head it wrote
    (store.py); with concurrent writers doing the same, both chains still recompute, and an
    append in a savepoint that is rolled back leaves no trace in the chain."""
    async def writer(w: int) -> None:
        for i in range(4):
            async with store.db.transaction() as conn:
                await store.append(conn, f"w{w}", None, [NewEvent("thing-made", {"w": w, "i": i})], topic=TOPIC)
                await store.append_many(conn, [(f"w{w}-b", None, [NewEvent("thing-made", {"i": i})]),
                                               (f"w{w}", None, [NewEvent("thing-noted", {"i": i})], None)],
                                        topic=TOPIC)
                await store.append(conn, f"w{w}-b", None, [NewEvent("thing-noted", {"i": i})])

    async with asyncio.timeout(60):
        await asyncio.gather(*(writer(w) for w in range(4)))
    if not store.db.is_sqlite:
        async with store.db.transaction() as conn:
            await store.append(conn, "sp", 0, [NewEvent("thing-made", {"kept": 1})], topic=TOPIC)
            savepoint = await conn.begin_nested()
            await store.append(conn, "sp", 1, [NewEvent("thing-made", {"kept": 0})], topic=TOPIC)
            await savepoint.rollback()
            await store.append(conn, "sp", 1, [NewEvent("thing-made", {"kept": 2})], topic=TOPIC)
        assert [e.data["kept"] for e in await store.read_stream("sp")] == [1, 2]

    async with store.db.read() as conn:
        rows = (await conn.execute(select(events_table).order_by(events_table.c.position))).all()
    assert len(rows) == 4 * 4 * 4 + (0 if store.db.is_sqlite else 2)
    _assert_chain(rows)
    # per-batch topics: `thing-noted` of w* streams and the last append went to no topic
    assert await _count(store, outbox_table) == 4 * 4 * 2 + (0 if store.db.is_sqlite else 2)
