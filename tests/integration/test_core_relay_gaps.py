"""The outbox relay never skips an event that commits late (PostgreSQL + real Kafka).

Many writers append concurrently while the relay publishes; some hold their transaction open for a
while before or after appending, so they commit late; some roll back after appending (holes in the
position sequence). Afterwards the topic holds every committed event exactly once, none of the
rolled-back ones, each key's events in version order, and global positions increasing on each
partition (appends are serialised by the store's advisory lock, so commits follow positions).
"""
from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest
from sqlalchemy import func, select

from shared.aggregate import NewEvent
from shared.bus import KafkaBus
from shared.db import Database
from shared.events import Envelope
from shared.migrations import create_core_schema
from shared.relay import OutboxRelay
from shared.schema import events as events_table
from shared.schema import outbox as outbox_table
from shared.store import EventStore
from tests.helpers import read_whole_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

WRITERS = 8
APPENDS_PER_WRITER = 50
STREAMS_PER_WRITER = 4


class RolledBack(Exception):
    pass


async def test_concurrent_late_commits_are_all_published_once_and_in_order(
    kafka_bootstrap: str, fresh_database_url: str, kafka_topic_prefix: str
) -> None:
    topic = f"{kafka_topic_prefix}placematch.gaps"
    db = Database(fresh_database_url, pool_size=12)
    await create_core_schema(db)
    store = EventStore(db, "placematch/gaps")
    bus = KafkaBus(kafka_bootstrap, partitions=3, client_id=f"{kafka_topic_prefix}relay")
    await bus.start([topic])
    relay = OutboxRelay(db, bus, batch_size=25, poll_seconds=0.05)
    relay_task = asyncio.create_task(relay.run())
    rolled_back_ids: list[str] = []
    try:
        async def writer(w: int) -> None:
            rng = random.Random(w)
            versions = defaultdict(int)
            for i in range(APPENDS_PER_WRITER):
                stream = f"w{w}-s{i % STREAMS_PER_WRITER}"
                late_before = rng.random() < 0.15  # transaction open, not yet appended
                late_after = rng.random() < 0.10   # appended (holds the append lock), commits late
                roll_back = rng.random() < 0.05
                try:
                    async with db.transaction() as conn:
                        if late_before:
                            await asyncio.sleep(rng.uniform(0.01, 0.15))
                        recorded = await store.append(conn, stream, versions[stream],
                                                      [NewEvent("thing-made", {"w": w, "i": i})], topic=topic)
                        if late_after:
                            await asyncio.sleep(rng.uniform(0.01, 0.08))
                        if roll_back:
                            rolled_back_ids.extend(e.id for e in recorded)
                            raise RolledBack
                    versions[stream] += 1
                except RolledBack:
                    pass
                await asyncio.sleep(0)

        async with asyncio.timeout(240):
            await asyncio.gather(*(writer(w) for w in range(WRITERS)))

        async with db.read() as conn:
            committed = {r.event_id: r for r in (await conn.execute(select(events_table))).all()}
        assert rolled_back_ids, "the scenario should include rolled-back appends"
        assert not set(rolled_back_ids) & committed.keys()
        expected = WRITERS * APPENDS_PER_WRITER - len(rolled_back_ids)
        assert len(committed) == expected

        async def outbox_drained() -> bool:
            async with db.read() as conn:
                left = (await conn.execute(select(func.count()).select_from(outbox_table))).scalar_one()
            return left == 0 and relay.published >= expected
        await wait_for(outbox_drained, timeout=120, message="the relay to publish the whole outbox")
        assert relay.published == expected

        records = await read_whole_topic(kafka_bootstrap, topic)
        envelopes = [(r, Envelope.from_kafka(r.value, dict(r.headers))) for r in records]
        ids = [e.id for _, e in envelopes]
        assert len(ids) == len(set(ids)), "an event was published twice"
        assert set(ids) == committed.keys(), (
            f"missing {len(committed.keys() - set(ids))}, unexpected {len(set(ids) - committed.keys())}")

        per_key: dict[str, list[int]] = defaultdict(list)
        per_partition: dict[int, list[int]] = defaultdict(list)
        key_partitions: dict[str, set[int]] = defaultdict(set)
        for record, envelope in envelopes:
            assert record.key == envelope.subject.encode()
            per_key[envelope.subject].append(envelope.sequence)
            key_partitions[envelope.subject].add(record.partition)
            per_partition[record.partition].append(committed[envelope.id].position)
        for key, sequences in per_key.items():
            assert sequences == list(range(1, len(sequences) + 1)), f"{key} out of version order: {sequences}"
            assert len(key_partitions[key]) == 1
        assert len(per_key) == WRITERS * STREAMS_PER_WRITER
        for partition, positions in per_partition.items():
            assert positions == sorted(positions), f"partition {partition}: positions published out of order"
    finally:
        relay_task.cancel()
        await asyncio.gather(relay_task, return_exceptions=True)
        await bus.stop()
        await db.dispose()
