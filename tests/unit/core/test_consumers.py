"""Relay and consumer on SQLite and the local bus: each event applied once, in journal order."""
from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select

from shared.aggregate import NewEvent
from shared.bus import LocalBus, Message
from shared.consumers import PoisonEvent
from shared.db import Database
from shared.events import Envelope
from shared.migrations import create_core_schema
from shared.schema import processed_events
from shared.service import ConsumerSpec, ServiceRuntime
from shared.settings import Settings

counts = MetaData()
seen = Table("seen", counts, Column("subject", String(100), primary_key=True), Column("n", Integer))


async def _wait(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, relay_poll_seconds=0.1, consumer_retry_base_seconds=0.01)


@pytest.mark.parametrize("batch_size", [1, 20])
async def test_relay_and_consumer_apply_each_event_once(settings, batch_size: int) -> None:
    """Alone or in batches (a batch with a poison event in it is rolled back and redone one by
    one), every event has one effect, the poison one goes to the DLQ, and the journal numbers
    the inputs 1, 2, 3... in the order they were taken in."""
    async def handler(conn, envelope: Envelope) -> None:
        if envelope.data.get("poison"):
            raise PoisonEvent("bad")
        row = (await conn.execute(select(seen.c.n).where(seen.c.subject == envelope.subject))).scalar()
        if row is None:
            await conn.execute(seen.insert().values(subject=envelope.subject, n=1))
        else:
            await conn.execute(seen.update().where(seen.c.subject == envelope.subject).values(n=row + 1))

    async def migrate(db: Database) -> None:
        await create_core_schema(db)
        async with db.engine.begin() as conn:
            await conn.run_sync(counts.create_all)

    runtime = ServiceRuntime("coretest", settings, publishes=["coretest"],
                             consumes=[ConsumerSpec(["coretest"], handler, batch_size=batch_size)], migrate=migrate)
    await runtime.start()
    try:
        async with runtime.db.transaction() as conn:
            for i in range(5):
                await runtime.store.append(conn, f"s-{i}", 0, [NewEvent("thing-made", {"i": i})],
                                           topic=runtime.topic("coretest"))
            await runtime.store.append(conn, "poison", 0, [NewEvent("thing-made", {"poison": True})],
                                       topic=runtime.topic("coretest"))

        async def all_seen() -> bool:
            async with runtime.db.read() as conn:
                return len((await conn.execute(select(seen))).all()) == 5 and runtime.consumers[0].dead_lettered == 1
        await _wait(all_seen)

        # redeliver everything: no second effect
        bus = runtime.bus
        assert isinstance(bus, LocalBus)
        messages = await bus.read_topic(runtime.topic("coretest"))
        await bus.publish([Message(m.topic, m.key, m.value) for m in messages if b"poison" not in m.value])
        async def redelivered() -> bool:
            return runtime.consumers[0].duplicates == 5
        await _wait(redelivered)
        assert runtime.consumers[0].handled == 5
        async with runtime.db.read() as conn:
            assert {r.n for r in (await conn.execute(select(seen))).all()} == {1}
        dlq = await bus.read_topic(runtime.topic("coretest") + ".dlq")
        assert len(dlq) == 1 and b"poison" in dlq[0].value

        # a clean backlog: in batch mode, one transaction
        async with runtime.db.transaction() as conn:
            for i in range(5, 9):
                await runtime.store.append(conn, f"s-{i}", 0, [NewEvent("thing-made", {"i": i})],
                                           topic=runtime.topic("coretest"))

        async def more_seen() -> bool:
            return runtime.consumers[0].handled == 9
        await _wait(more_seen)
        async with runtime.db.read() as conn:
            assert {r.n for r in (await conn.execute(select(seen))).all()} == {1}
            seqs = (await conn.execute(select(processed_events.c.seq).order_by(processed_events.c.seq))).scalars().all()
        assert seqs == list(range(1, 10))
    finally:
        await runtime.stop()
