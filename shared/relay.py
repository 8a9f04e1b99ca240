"""Outbox relay: publishes recorded events to the bus in position order, then deletes them.

It wakes as soon as a transaction of this process commits (`Database.committed`) and otherwise
polls, so events written by another process are published within `poll_seconds`. A row leaves the
outbox only after the bus acknowledged it, so a crash or a broker outage delays, never loses. On
PostgreSQL a batch is published under an advisory lock: with several replicas on one database, one
relay publishes at a time (the others find the lock taken and wait for their next turn).
"""
from __future__ import annotations

import asyncio
import logging

from sqlalchemy import delete, select

from shared import metrics, tracing
from shared.bus import Bus, Message
from shared.db import Database
from shared.schema import outbox

log = logging.getLogger("placematch.relay")

RELAY_LOCK_KEY = 0x706C726C  # "plrl": one relay at a time per database (PostgreSQL)
STRUCTURED = {"content-type": b"application/cloudevents+json"}
"""CloudEvents Kafka binding, structured mode: the whole event is the value."""


class OutboxRelay:
    def __init__(self, db: Database, bus: Bus, *, batch_size: int = 500, poll_seconds: float = 0.5,
                 service: str = "relay", metrics: metrics.ServiceMetrics | None = None) -> None:
        self.db = db
        self.service = service
        self.metrics = metrics
        self.bus = bus
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.published = 0
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        """Finish the batch in flight (publish and delete), then leave `run`."""
        self._stopping.set()
        self.db.committed.set()

    async def publish_pending(self) -> int:
        """Publish one batch; return how many rows were published."""
        if self.db.dialect == "postgresql":
            return await self._publish_exclusively()
        async with self.db.read() as conn:
            rows = (await conn.execute(
                select(outbox).order_by(outbox.c.position).limit(self.batch_size))).all()
        if not rows:
            return 0
        with tracing.publishing(self.service, rows):
            await self.bus.publish([Message(r.topic, r.key, r.payload, STRUCTURED) for r in rows])
        metrics.published(self.metrics, rows)
        async with self.db.transaction() as conn:
            await conn.execute(delete(outbox).where(outbox.c.position.in_([r.position for r in rows])))
        self.published += len(rows)
        return len(rows)

    async def _publish_exclusively(self) -> int:
        """`publish_pending` while holding the database's relay lock, so that of several replicas'
        relays on one outbox only one publishes at a time: otherwise two would read the same rows
        and both publish them (every event twice, a key's copies interleaved on its partition).
        0 when another relay holds the lock: it reads the outbox again after each batch, so it
        publishes what this replica wrote too. The transaction does not signal `committed` (it
        would wake this relay again at once). A crash in the middle ends the session and with it
        the lock; the batch is published again by whichever relay comes next, as before."""
        async with self.db.engine.begin() as conn:
            if not (await conn.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({RELAY_LOCK_KEY})")).scalar():
                return 0
            rows = (await conn.execute(
                select(outbox).order_by(outbox.c.position).limit(self.batch_size))).all()
            if not rows:
                return 0
            with tracing.publishing(self.service, rows):
                await self.bus.publish([Message(r.topic, r.key, r.payload, STRUCTURED) for r in rows])
            metrics.published(self.metrics, rows)
            await conn.execute(delete(outbox).where(outbox.c.position.in_([r.position for r in rows])))
        self.published += len(rows)
        return len(rows)

    async def drain(self, timeout: float = 30.0) -> None:
        """Publish until the outbox is empty, or another replica's relay has the lock (it publishes
        the rest) (tests, shutdown)."""
        async with asyncio.timeout(timeout):
            while await self.publish_pending():
                pass

    async def run(self) -> None:
        backoff = 0.2
        self._stopping.clear()
        while not self._stopping.is_set():
            try:
                self.db.committed.clear()
                if await self.publish_pending():
                    backoff = 0.2
                    continue
                try:
                    await asyncio.wait_for(self.db.committed.wait(), self.poll_seconds)
                except asyncio.TimeoutError:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or database away: keep the rows, try again
                log.warning("outbox relay: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
