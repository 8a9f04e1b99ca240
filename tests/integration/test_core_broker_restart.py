"""Stopping and restarting the Kafka broker mid-stream loses nothing and applies nothing twice.

A writer appends steadily to PostgreSQL while the broker is stopped and started again on the same
port and data. The broker stays down until the relay has seen a publish fail (so the outbox really
holds back events and they are published again later, possibly twice on the topic). The relay and
the consumer reconnect, and in the end the projection holds every appended event exactly once, in
each aggregate's order.
"""
from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.aggregate import NewEvent
from shared.db import Database
from shared.events import Envelope
from shared.migrations import create_core_schema
from shared.schema import outbox as outbox_table
from shared.service import ConsumerSpec, ServiceRuntime
from shared.settings import Settings
from tests.helpers import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

EVENTS = 300
STREAMS = 20
APPEND_INTERVAL = 0.06  # 300 events over 20 seconds or more
STOP_AFTER = 60         # events appended before the broker goes down

projection = MetaData()
applied = Table(
    "applied", projection,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),  # deliberately not unique: a second effect would show
    Column("subject", String(100), nullable=False),
    Column("sequence", Integer, nullable=False),
)


async def apply(conn: AsyncConnection, event: Envelope) -> None:
    await conn.execute(applied.insert().values(event_id=event.id, subject=event.subject, sequence=event.sequence))


async def migrate(db: Database) -> None:
    await create_core_schema(db)
    async with db.engine.begin() as conn:
        await conn.run_sync(projection.create_all)


class Failures(logging.Handler):
    """Collects the relay's warnings: each one is a publish that failed and will be retried."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class Broker:
    """The test run's broker through deploy/kafka/kafka.sh (run off the event loop)."""

    def __init__(self, ctl: str, directory: str) -> None:
        self.script, self.dir = ctl, directory

    async def _run(self, command: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(subprocess.run, [self.script, command, "--dir", self.dir],
                                       capture_output=True, text=True, timeout=timeout, check=False)

    async def ctl(self, command: str) -> str:
        done = await self._run(command)
        assert done.returncode == 0, f"kafka.sh {command} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        return done.stdout.strip()

    async def running(self) -> bool:
        return (await self._run("status", timeout=60)).returncode == 0


@pytest.fixture
def broker(kafka_bootstrap: str) -> Broker:
    ctl, directory = os.environ.get("PLACEMATCH_TEST_KAFKA_CTL"), os.environ.get("PLACEMATCH_TEST_KAFKA_DIR")
    if not ctl or not directory:
        reason = ("PLACEMATCH_TEST_KAFKA_CTL and PLACEMATCH_TEST_KAFKA_DIR are not set, so the broker cannot be "
                  "stopped and restarted (run under deploy/test-env.sh, which starts its own broker)")
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return Broker(ctl, directory)


@pytest.fixture
async def runtime(kafka_bootstrap: str, fresh_database_url: str,
                  kafka_topic_prefix: str) -> AsyncIterator[ServiceRuntime]:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=fresh_database_url,
                        topic_prefix=kafka_topic_prefix, relay_poll_seconds=0.1)
    service = ServiceRuntime("restart", settings, publishes=["restart"],
                             consumes=[ConsumerSpec(["restart"], apply)], migrate=migrate)
    await service.start()
    try:
        await service.consumers_ready(timeout=60)
        yield service
    finally:
        await service.stop()


async def test_broker_stop_and_start_mid_stream_loses_and_duplicates_nothing(
    runtime: ServiceRuntime, broker: Broker, kafka_bootstrap: str
) -> None:
    consumer = runtime.consumers[0]
    topic = runtime.topic("restart")
    appended: list[Envelope] = []
    enough_before_stop = asyncio.Event()

    async def writer() -> None:
        versions: dict[str, int] = defaultdict(int)
        for i in range(EVENTS):
            stream = f"agg-{i % STREAMS}"
            async with runtime.db.transaction() as conn:
                appended.extend(await runtime.store.append(conn, stream, versions[stream],
                                                           [NewEvent("thing-made", {"i": i})], topic=topic))
            versions[stream] += 1
            if len(appended) >= STOP_AFTER:
                enough_before_stop.set()
            await asyncio.sleep(APPEND_INTERVAL)

    async def applied_count() -> int:
        async with runtime.db.read() as conn:
            return (await conn.execute(select(func.count()).select_from(applied))).scalar_one()

    relay_failures = Failures()
    logging.getLogger("placematch.relay").addHandler(relay_failures)
    writing = asyncio.create_task(writer())
    outage: dict[str, Any] = {}
    try:
        # the pipeline works before the outage
        await wait_for(lambda: enough_before_stop.is_set(), timeout=120, message=f"{STOP_AFTER} appends")
        await wait_for(applied_count, timeout=120, message="a first event through Kafka")

        await broker.ctl("stop")
        outage["stopped_at"] = len(appended)
        assert not await broker.running()
        await wait_for(lambda: relay_failures.messages, timeout=120,
                       message="the relay to fail a publish while the broker is down")
        address = (await broker.ctl("start")).splitlines()[-1]
        outage["started_at"] = len(appended)
        assert address == kafka_bootstrap, "the broker must come back on the same address"

        async with asyncio.timeout(180):
            await writing
    finally:
        logging.getLogger("placematch.relay").removeHandler(relay_failures)
        if not writing.done():
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        if not await broker.running():
            await broker.ctl("start")

    assert len(appended) == EVENTS
    assert outage["stopped_at"] < outage["started_at"], f"events should be appended while the broker is down: {outage}"

    async def all_applied() -> bool:
        count = await applied_count()
        async with runtime.db.read() as conn:
            pending = (await conn.execute(select(func.count()).select_from(outbox_table))).scalar_one()
        assert count == EVENTS, f"{count} of {EVENTS} applied, {pending} still in the outbox"
        return True
    await wait_for(all_applied, timeout=180, message=f"all {EVENTS} events applied after the restart")

    async with runtime.db.read() as conn:
        rows = (await conn.execute(select(applied).order_by(applied.c.n))).all()
        left_in_outbox = (await conn.execute(select(func.count()).select_from(outbox_table))).scalar_one()
    ids = [r.event_id for r in rows]
    assert len(ids) == len(set(ids)) == EVENTS, "an event was applied twice"
    assert set(ids) == {e.id for e in appended}
    per_stream: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        per_stream[row.subject].append(row.sequence)
    for stream, sequences in per_stream.items():
        assert sequences == list(range(1, len(sequences) + 1)), f"{stream} applied out of order: {sequences}"
    assert left_in_outbox == 0
    assert consumer.dead_lettered == 0
    assert consumer.handled == EVENTS
