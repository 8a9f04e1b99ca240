"""The message bus behind one small interface: `KafkaBus` (aiokafka) and `LocalBus`.

`LocalBus` is the embedded default: a durable log in one SQLite file that every service of
`placematch up` shares, with committed offsets per consumer group, so nothing published is lost
across restarts. It keeps one ordered log per topic (Kafka with one partition, in effect).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, Text, func, select

from shared.db import Database, sqlite_url, upsert

log = logging.getLogger("placematch.bus")


@dataclass(frozen=True)
class Message:
    topic: str
    key: str | None
    value: bytes
    headers: dict[str, bytes] = field(default_factory=dict)
    partition: int = 0
    offset: int = 0


class Subscription(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def fetch(self, timeout: float = 1.0, max_records: int = 100) -> list[Message]: ...
    async def commit(self, message: Message) -> None:
        """Mark `message` and everything before it on its partition as consumed."""
    async def rewind(self) -> None:
        """Go back to the last committed position."""


class Bus(Protocol):
    total_order: bool
    async def start(self, topics: Sequence[str] = ()) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, messages: Sequence[Message]) -> None:
        """Return once every message is durably accepted (acks=all), else raise."""
    def subscribe(self, group: str, topics: Sequence[str]) -> Subscription: ...
    async def ping(self) -> bool: ...
    async def read_topics(self, topics: Sequence[str], group: str, timeout: float = 600) -> list[Message]:
        """Everything on `topics` so far, from the beginning, without committing offsets (replay)."""


# --------------------------------------------------------------------------- local

_local_meta = MetaData()
_log = Table(
    "bus_log", _local_meta,
    Column("offset", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(200), nullable=False, index=True),
    Column("key", String(100)),
    Column("value", LargeBinary, nullable=False),
    Column("headers", Text, nullable=False, default="{}"),
)
_offsets = Table(
    "bus_offsets", _local_meta,
    Column("group", String(200), primary_key=True),
    Column("topic", String(200), primary_key=True),
    Column("offset", Integer, nullable=False),
)

_shared_local: dict[str, list[Any]] = {}  # path -> [Database, published Event, users]


class LocalBus:
    """Durable in-process bus on SQLite; services in one process share it by file path."""

    total_order = True
    """One log for all topics: a consumer of several topics takes their messages in log order."""

    def __init__(self, path: Path | str, poll_seconds: float = 0.5) -> None:
        self.path = str(Path(path).resolve())
        self.poll_seconds = poll_seconds
        self.db: Database | None = None
        self.published: asyncio.Event | None = None

    async def start(self, topics: Sequence[str] = ()) -> None:
        shared = _shared_local.get(self.path)
        if shared is None:
            db = Database(sqlite_url(self.path))
            async with db.engine.begin() as conn:
                await conn.run_sync(_local_meta.create_all)
            shared = _shared_local[self.path] = [db, asyncio.Event(), 0]
        shared[2] += 1
        self.db, self.published = shared[0], shared[1]

    async def stop(self) -> None:
        shared = _shared_local.get(self.path)
        if shared is None or self.db is None:
            return
        self.db = None
        shared[2] -= 1
        if shared[2] <= 0:
            del _shared_local[self.path]
            await shared[0].dispose()

    async def publish(self, messages: Sequence[Message]) -> None:
        assert self.db is not None and self.published is not None, "LocalBus not started"
        if not messages:
            return
        async with self.db.transaction() as conn:
            await conn.execute(_log.insert(), [
                {"topic": m.topic, "key": m.key, "value": m.value,
                 "headers": orjson.dumps({k: v.decode() for k, v in m.headers.items()}).decode()} for m in messages])
        self.published.set()

    def subscribe(self, group: str, topics: Sequence[str]) -> LocalSubscription:
        return LocalSubscription(self, group, list(topics))

    async def ping(self) -> bool:
        return self.db is not None and await self.db.ping()

    async def read_topic(self, topic: str) -> list[Message]:
        """Every message of a topic from the beginning (replay, tests)."""
        return await self.read_topics([topic], "")

    async def read_topics(self, topics: Sequence[str], group: str, timeout: float = 600) -> list[Message]:
        """Every message of `topics` from the beginning, in log order (replay; no offsets kept)."""
        assert self.db is not None, "LocalBus not started"
        async with self.db.read() as conn:
            query = select(_log).where(_log.c.topic.in_(list(topics))).order_by(_log.c.offset)
            rows = (await conn.execute(query)).all()
        return [Message(r.topic, r.key, r.value, _headers(r.headers), offset=r.offset) for r in rows]


def _headers(raw: str | None) -> dict[str, bytes]:
    return {k: v.encode() for k, v in orjson.loads(raw or "{}").items()}


class LocalSubscription:
    def __init__(self, bus: LocalBus, group: str, topics: list[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        self._position = 0

    async def start(self) -> None:
        assert self.bus.db is not None
        async with self.bus.db.read() as conn:
            committed = (await conn.execute(
                select(func.min(_offsets.c.offset)).where(_offsets.c.group == self.group)
            )).scalar()
        self._position = committed or 0

    async def stop(self) -> None:
        return None

    async def fetch(self, timeout: float = 1.0, max_records: int = 100) -> list[Message]:
        db, published = self.bus.db, self.bus.published
        assert db is not None and published is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            published.clear()
            async with db.read() as conn:
                rows = (await conn.execute(
                    select(_log).where(_log.c.offset > self._position, _log.c.topic.in_(self.topics))
                    .order_by(_log.c.offset).limit(max_records))).all()
            if rows:
                self._position = rows[-1].offset
                return [Message(r.topic, r.key, r.value, _headers(r.headers), offset=r.offset) for r in rows]
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(published.wait(), min(remaining, self.bus.poll_seconds))

    async def commit(self, message: Message) -> None:
        assert self.bus.db is not None
        async with self.bus.db.transaction() as conn:
            for topic in self.topics:
                await upsert(conn, _offsets, {"group": self.group, "topic": topic, "offset": message.offset},
                             ["group", "topic"])

    async def rewind(self) -> None:
        """Resume after the last committed offset (used when processing was interrupted)."""
        await self.start()


# --------------------------------------------------------------------------- kafka


class KafkaBus:
    """aiokafka: idempotent producer (acks=all), key = aggregate id, topics created on start."""

    total_order = False
    """Order is kept per partition only."""

    def __init__(self, bootstrap: str, partitions: int = 3, client_id: str = "placematch") -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.client_id = client_id
        self._producer: Any = None

    async def start(self, topics: Sequence[str] = ()) -> None:
        if topics:
            await self.ensure_topics(topics)
        await self._start_producer()

    async def _start_producer(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, client_id=self.client_id, enable_idempotence=True,
            acks="all", linger_ms=2, request_timeout_ms=15000, retry_backoff_ms=200,
        )
        try:
            await producer.start()
        except Exception:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self._producer = producer

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=f"{self.client_id}-admin")
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            wanted = [t for t in dict.fromkeys(topics) if t not in existing]
            if wanted:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [NewTopic(name=t, num_partitions=self.partitions, replication_factor=1) for t in wanted])
        finally:
            await admin.close()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, messages: Sequence[Message]) -> None:
        """After a failed send the idempotent producer's sequence numbers are spent (every later
        send would fail with OutOfOrderSequenceNumber), so it is replaced by a new producer with a
        new id; the caller retries the batch, and consumers drop any copy that did get through."""
        if self._producer is None:
            await self._start_producer()
        try:
            futures = []
            for m in messages:
                futures.append(await self._producer.send(
                    m.topic, value=m.value, key=m.key.encode() if m.key else None,
                    headers=list(m.headers.items())))
            await asyncio.gather(*futures)
        except Exception:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                await producer.stop()
            raise

    def subscribe(self, group: str, topics: Sequence[str]) -> KafkaSubscription:
        return KafkaSubscription(self, group, list(topics))

    async def read_topics(self, topics: Sequence[str], group: str, timeout: float = 600) -> list[Message]:
        """Every record of `topics` from the beginning up to the end offsets they had when reading
        began, partition by partition in offset order, read by a consumer in the (fresh) group
        `group`. Nothing is committed: live consumer groups are not touched. A topic that does not
        exist is a LookupError."""
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=f"{self.client_id}-admin")
        await admin.start()
        try:  # before subscribing: a broker may auto-create a topic a consumer asks for
            missing = [t for t in topics if t not in set(await admin.list_topics())]
        finally:
            await admin.close()
        if missing:
            raise LookupError(f"no topic {', '.join(missing)} on {self.bootstrap}")
        consumer = AIOKafkaConsumer(
            *topics, bootstrap_servers=self.bootstrap, group_id=group, client_id=f"{self.client_id}-{group}",
            enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed",
            max_partition_fetch_bytes=4 * 1024 * 1024)
        await consumer.start()
        try:
            async with asyncio.timeout(timeout):
                while any(consumer.partitions_for_topic(t) is None for t in topics):
                    await asyncio.sleep(0.1)  # their metadata arrives in the background
                wanted = {TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()}
                ends = await consumer.end_offsets(list(wanted))
                records: list[Message] = []

                async def behind() -> bool:
                    if consumer.assignment() != wanted:  # the group has not handed us every partition yet
                        return True
                    return any([await consumer.position(tp) < ends[tp] for tp in wanted])

                while await behind():
                    for tp, batch in (await consumer.getmany(timeout_ms=500, max_records=5000)).items():
                        records.extend(Message(tp.topic, r.key.decode() if r.key else None, r.value,
                                               dict(r.headers or ()), tp.partition, r.offset)
                                       for r in batch if r.offset < ends[tp])
        finally:
            await consumer.stop()
        return sorted(records, key=lambda m: (m.topic, m.partition, m.offset))

    async def ping(self) -> bool:
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 5)
            return True
        except Exception:
            return False


class KafkaSubscription:
    def __init__(self, bus: KafkaBus, group: str, topics: list[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        self._consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self._consumer = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=self.bus.bootstrap, group_id=self.group,
            client_id=f"{self.bus.client_id}-{self.group}", enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
            session_timeout_ms=10000, heartbeat_interval_ms=1000, metadata_max_age_ms=5000,
        )
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def fetch(self, timeout: float = 1.0, max_records: int = 100) -> list[Message]:
        batches = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records)
        out: list[Message] = []
        for tp, records in batches.items():
            for r in records:
                out.append(Message(tp.topic, r.key.decode() if r.key else None, r.value,
                                   dict(r.headers or ()), tp.partition, r.offset))
        return out

    async def commit(self, message: Message) -> None:
        from aiokafka import TopicPartition
        from aiokafka.structs import OffsetAndMetadata

        await self._consumer.commit(
            {TopicPartition(message.topic, message.partition): OffsetAndMetadata(message.offset + 1, "")})

    async def rewind(self) -> None:
        """Re-seek to the committed offsets (what follows is redelivered, and deduplicated)."""
        assignment = self._consumer.assignment()
        if assignment:
            await self._consumer.seek_to_committed(*assignment)


def make_bus(settings: Any) -> Bus:
    if settings.kafka_bootstrap:
        return KafkaBus(settings.kafka_bootstrap, settings.kafka_partitions)
    return LocalBus(Path(settings.data_dir) / "bus.db", settings.relay_poll_seconds)
