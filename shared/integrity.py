"""Tamper evidence: recompute every event's stream and chain hashes and find the first broken link."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from shared.db import Database
from shared.schema import events
from shared.store import GENESIS, link_hash


@dataclass(frozen=True)
class BrokenLink:
    position: int
    stream_id: str
    version: int
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    events: int
    broken: BrokenLink | None

    @property
    def ok(self) -> bool:
        return self.broken is None


async def verify_store(db: Database, batch: int = 5000) -> VerifyReport:
    """Walk the events table in position order; an edited, removed or inserted row breaks a link."""
    chain = GENESIS
    stream_heads: dict[str, tuple[int, str]] = {}
    count = 0
    after = 0
    async with db.read() as conn:
        while True:
            rows = (await conn.execute(
                select(events).where(events.c.position > after).order_by(events.c.position).limit(batch))).all()
            if not rows:
                return VerifyReport(count, None)
            for row in rows:
                count += 1
                after = row.position
                version, previous = stream_heads.get(row.stream_id, (0, GENESIS))
                if row.version != version + 1:
                    return VerifyReport(count, BrokenLink(row.position, row.stream_id, row.version,
                                                          f"version {row.version} follows {version}"))
                expected_stream = link_hash(previous, row.body)
                if row.stream_hash != expected_stream:
                    return VerifyReport(count, BrokenLink(row.position, row.stream_id, row.version,
                                                          "content does not match its stream hash"))
                chain = link_hash(chain, row.body)
                if row.chain_hash != chain:
                    why = "global chain broken (an event was removed or inserted before it)"
                    return VerifyReport(count, BrokenLink(row.position, row.stream_id, row.version, why))
                stream_heads[row.stream_id] = (row.version, row.stream_hash)
