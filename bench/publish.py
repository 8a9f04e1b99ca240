"""Publish path: events appended through EventStore + outbox + OutboxRelay + KafkaBus to a real
broker, vs raw aiokafka producing the same payloads with the same producer settings
(idempotent, acks=all, linger_ms=2) to a topic with the same partitions.

Ours: WRITERS concurrent tasks each append one event per transaction (as API requests do) on
PostgreSQL while the relay runs; the clock stops when the relay has had every event acknowledged by
Kafka. Baseline: the same bytes and keys sent as fast as aiokafka accepts them, clock stops at the
last acknowledgement.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from shared.aggregate import NewEvent
from shared.bus import KafkaBus
from shared.db import Database
from shared.events import Envelope
from shared.migrations import create_core_schema
from shared.relay import OutboxRelay
from shared.store import EventStore

from .common import Infra, Row, fresh_pg_database, referral_raised_data

WRITERS = 8


async def _ours(infra: Infra, payloads: list[dict[str, Any]], n: int, warmup: int) -> float:
    assert infra.kafka and infra.database_url
    db = Database(await fresh_pg_database(infra.database_url, "publish"))
    await create_core_schema(db)
    topic = f"bench-{uuid.uuid4().hex[:8]}.placematch.referral"
    bus = KafkaBus(infra.kafka)
    await bus.start([topic])
    store = EventStore(db, "placematch/referral")
    relay = OutboxRelay(db, bus)
    relay_task = asyncio.create_task(relay.run())

    async def append_all(count: int) -> None:
        queue = iter(range(count))

        async def writer() -> None:
            for i in queue:
                async with db.transaction() as conn:
                    await store.append(conn, str(uuid.uuid4()), 0,
                                       [NewEvent("referral-raised", payloads[i % len(payloads)])], topic=topic)

        await asyncio.gather(*(writer() for _ in range(WRITERS)))

    async def published(target: int) -> None:
        while relay.published < target:
            await asyncio.sleep(0.002)

    try:
        await append_all(warmup)
        await asyncio.wait_for(published(warmup), 60)
        started = time.perf_counter()
        await append_all(n)
        await asyncio.wait_for(published(warmup + n), 120)
        seconds = time.perf_counter() - started
    finally:
        relay.request_stop()
        await asyncio.wait_for(relay_task, 10)
        await bus.stop()
        await db.dispose()
    return n / seconds


async def _raw(infra: Infra, payloads: list[dict[str, Any]], n: int, warmup: int) -> float:
    from aiokafka import AIOKafkaProducer

    assert infra.kafka
    topic = f"bench-{uuid.uuid4().hex[:8]}.raw"
    admin_bus = KafkaBus(infra.kafka)
    await admin_bus.ensure_topics([topic])
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka, enable_idempotence=True, acks="all", linger_ms=2,
                                request_timeout_ms=15000, retry_backoff_ms=200)
    await producer.start()
    messages = []
    for i in range(warmup + n):
        key = str(uuid.uuid4())
        body = Envelope(type="referral-raised", subject=key, data=payloads[i % len(payloads)],
                        source="placematch/referral", sequence=1).to_json()
        messages.append((key.encode(), body))

    async def send(batch: list[tuple[bytes, bytes]]) -> None:
        futures = [await producer.send(topic, value=value, key=key) for key, value in batch]
        await asyncio.gather(*futures)

    try:
        await send(messages[:warmup])
        started = time.perf_counter()
        await send(messages[warmup:])
        seconds = time.perf_counter() - started
    finally:
        await producer.stop()
    return n / seconds


async def run(infra: Infra, quick: bool) -> list[Row]:
    if not (infra.kafka and infra.database_url):
        return [Row("publish", "store + outbox + relay -> Kafka", None, note="needs Kafka and PostgreSQL "
                    "(run via deploy/test-env.sh)")]
    payloads = referral_raised_data(200)
    n, warmup = (1000, 200) if quick else (3000, 300)
    ours = await _ours(infra, payloads, n, warmup)
    raw = await _raw(infra, payloads, n, warmup)
    return [Row("publish", "store + outbox + relay -> Kafka (PostgreSQL)", ours, raw, "events/s",
                "raw aiokafka producer", note=f"{n} events, {WRITERS} writers, 1 event/tx")]
