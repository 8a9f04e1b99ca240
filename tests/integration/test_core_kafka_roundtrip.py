"""ServiceRuntime on real Kafka and PostgreSQL: append -> outbox -> relay -> topic -> consumer -> projection.

Also what is on the wire (a structured-mode CloudEvent keyed by aggregate id), that a redelivered
record has no second effect, and that poison and always-failing events go to `<topic>.dlq` with the
error while the events after them are still processed.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.aggregate import NewEvent
from shared.consumers import PoisonEvent
from shared.db import Database
from shared.events import Envelope
from shared.migrations import create_core_schema
from shared.service import ConsumerSpec, ServiceRuntime
from shared.settings import Settings
from tests.helpers import read_whole_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

projection = MetaData()
seen = Table("seen", projection, Column("subject", String(100), primary_key=True), Column("n", Integer, nullable=False))


class Handler:
    """Counts events per subject in `seen`; `poison` data is refused, `fail` data always raises."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()

    async def __call__(self, conn: AsyncConnection, event: Envelope) -> None:
        self.attempts[event.id] += 1
        if event.data.get("poison"):
            raise PoisonEvent("this event can never be applied")
        if event.data.get("fail"):
            raise RuntimeError("handler keeps failing")
        n = (await conn.execute(select(seen.c.n).where(seen.c.subject == event.subject))).scalar()
        if n is None:
            await conn.execute(seen.insert().values(subject=event.subject, n=1))
        else:
            await conn.execute(seen.update().where(seen.c.subject == event.subject).values(n=n + 1))


async def migrate(db: Database) -> None:
    await create_core_schema(db)
    async with db.engine.begin() as conn:
        await conn.run_sync(projection.create_all)


@pytest.fixture
async def runtime(kafka_bootstrap: str, fresh_database_url: str,
                  kafka_topic_prefix: str) -> AsyncIterator[ServiceRuntime]:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=fresh_database_url,
                        topic_prefix=kafka_topic_prefix, relay_poll_seconds=0.1,
                        consumer_max_attempts=2, consumer_retry_base_seconds=0.01)
    handler = Handler()
    service = ServiceRuntime("roundtrip", settings, publishes=["roundtrip"],
                             consumes=[ConsumerSpec(["roundtrip"], handler)], migrate=migrate)
    service.test_handler = handler  # type: ignore[attr-defined]
    await service.start()
    try:
        await service.consumers_ready(timeout=60)
        yield service
    finally:
        await service.stop()


async def counts(runtime: ServiceRuntime) -> dict[str, int]:
    async with runtime.db.read() as conn:
        return {r.subject: r.n for r in (await conn.execute(select(seen))).all()}


async def append(runtime: ServiceRuntime, stream: str, expected: int, data: dict, **kwargs) -> Envelope:
    async with runtime.db.transaction() as conn:
        [envelope] = await runtime.store.append(conn, stream, expected, [NewEvent("thing-made", data)],
                                                topic=runtime.topic("roundtrip"), **kwargs)
    return envelope


async def test_append_reaches_the_projection_as_a_cloudevent_keyed_by_aggregate(
    runtime: ServiceRuntime, kafka_bootstrap: str
) -> None:
    topic = runtime.topic("roundtrip")
    consumer = runtime.consumers[0]
    recorded = await append(runtime, "agg-1", 0, {"colour": "green", "pence": 1250},
                            actor="borough:croydon", correlation_id="corr-123")

    await wait_for(lambda: counts(runtime), timeout=90, message="the projection to be updated")
    assert await counts(runtime) == {"agg-1": 1}
    assert consumer.handled == 1

    [record] = await read_whole_topic(kafka_bootstrap, topic)
    assert record.key == b"agg-1"
    headers = dict(record.headers)
    assert headers.get("content-type") == b"application/cloudevents+json", (
        f"structured-mode CloudEvents on Kafka carry content-type application/cloudevents+json; headers: {headers}")
    wire = orjson.loads(record.value)
    assert wire["specversion"] == "1.0"
    assert wire["id"] == recorded.id
    assert wire["source"] == "placematch/roundtrip"
    assert wire["type"] == "thing-made"
    assert wire["subject"] == "agg-1"
    assert wire["time"] == recorded.time
    assert datetime.fromisoformat(wire["time"].replace("Z", "+00:00")).tzinfo is not None
    assert wire["datacontenttype"] == "application/json"
    assert wire["sequence"] == 1
    assert wire["correlationid"] == "corr-123"
    assert wire["actor"] == "borough:croydon"
    assert wire["data"] == {"colour": "green", "pence": 1250}
    assert "position" not in wire
    parsed = Envelope.from_kafka(record.value, headers, record.key)
    assert parsed == Envelope(**{**recorded.__dict__, "position": None})

    # Redelivery: the very same record again -> recognised, no second effect.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, record.value, key=record.key, headers=list(record.headers),
                                     partition=record.partition)
    finally:
        await producer.stop()
    await wait_for(lambda: consumer.duplicates >= 1, timeout=90, message="the redelivered record to be consumed")
    assert consumer.duplicates == 1 and consumer.handled == 1
    assert await counts(runtime) == {"agg-1": 1}

    # The next event of the same aggregate still applies once.
    await append(runtime, "agg-1", 1, {"colour": "blue"})
    await wait_for(lambda: consumer.handled == 2, timeout=90, message="the second event")
    assert await counts(runtime) == {"agg-1": 2}
    assert runtime.test_handler.attempts[recorded.id] == 1  # type: ignore[attr-defined]


async def test_poison_and_failing_events_go_to_the_dlq_and_later_events_still_apply(
    runtime: ServiceRuntime, kafka_bootstrap: str
) -> None:
    topic = runtime.topic("roundtrip")
    consumer = runtime.consumers[0]
    handler: Handler = runtime.test_handler  # type: ignore[attr-defined]

    poison = await append(runtime, "agg-poison", 0, {"poison": True})
    failing = await append(runtime, "agg-fail", 0, {"fail": True})
    # later events, on the same keys (so the same partitions, behind the bad ones) and another key
    after_poison = await append(runtime, "agg-poison", 1, {"ok": True})
    after_failing = await append(runtime, "agg-fail", 1, {"ok": True})
    await append(runtime, "agg-ok", 0, {"ok": True})

    expected = {"agg-poison": 1, "agg-fail": 1, "agg-ok": 1}

    async def settled() -> bool:
        return consumer.dead_lettered == 2 and await counts(runtime) == expected
    await wait_for(settled, timeout=120, message="later events applied and both bad ones dead-lettered")

    assert handler.attempts[poison.id] == 1, "a PoisonEvent is not retried"
    assert handler.attempts[failing.id] == 2, "a failing event is tried consumer_max_attempts times"
    assert handler.attempts[after_poison.id] == 1 and handler.attempts[after_failing.id] == 1
    assert consumer.handled == 3

    dlq = await wait_for(lambda: _two(read_whole_topic(kafka_bootstrap, f"{topic}.dlq")), timeout=90,
                         message="two records on the DLQ")
    by_id = {Envelope.from_kafka(r.value, dict(r.headers)).id: r for r in dlq}
    assert set(by_id) == {poison.id, failing.id}
    for event_id, marker in ((poison.id, b"PoisonEvent"), (failing.id, b"RuntimeError")):
        record = by_id[event_id]
        headers = dict(record.headers)
        assert marker in headers["placematch-error"]
        assert headers["placematch-consumer"] == consumer.name.encode()
        assert record.key == (b"agg-poison" if event_id == poison.id else b"agg-fail")
    whole_topic = await read_whole_topic(kafka_bootstrap, topic)
    originals = {Envelope.from_kafka(r.value, dict(r.headers)).id: r for r in whole_topic}
    for event_id, record in by_id.items():
        assert record.value == originals[event_id].value, "the DLQ keeps the event exactly as it was"
        assert dict(record.headers)["placematch-origin-offset"] == str(originals[event_id].offset).encode()

    # nothing is left half-done: the failed events were not recorded as processed
    assert await counts(runtime) == expected


async def _two(records_coro) -> list[ConsumerRecord] | None:
    records = await records_coro
    return records if len(records) >= 2 else None
