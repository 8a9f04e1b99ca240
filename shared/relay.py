"""Outbox relay: publishes recorded events to the bus in position order, then deletes them.

It wakes as soon as a transaction of this process commits (`Database.committed`) and otherwise
polls, so events written by another process are published within `poll_seconds`. A row leaves the
outbox only after the bus acknowledged it, so a crash or a broker outage delays, never loses.
"""
from __future__ import annotations

import asyncio
import logging

from sqlalchemy import delete, select

from shared.bus import Bus, Message
from shared.db import Database
from shared.schema import outbox

log = logging.getLogger("placematch.relay")

STRUCTURED = {"content-type": b"application/cloudevents+json"}
"""CloudEvents Kafka binding, structured mode: the whole event is the value."""


class OutboxRelay:
    def __init__(self, db: Database, bus: Bus, *, batch_size: int = 500, poll_seconds: float = 0.5) -> None:
        self.db = db
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
        async with self.db.read() as conn:
            rows = (await conn.execute(
                select(outbox).order_by(outbox.c.position).limit(self.batch_size))).all()
        if not rows:
            return 0
        await self.bus.publish([Message(r.topic, r.key, r.payload, STRUCTURED) for r in rows])
        async with self.db.transaction() as conn:
            await conn.execute(delete(outbox).where(outbox.c.position.in_([r.position for r in rows])))
        self.published += len(rows)
        return len(rows)

    async def drain(self, timeout: float = 30.0) -> None:
        """Publish until the outbox is empty (tests, shutdown)."""
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
