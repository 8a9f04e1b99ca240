"""Replay: rebuild the referral service's read models from the event log into a fresh database.

The referral's own stream gives each referral's view (offers, declines, outcome); the events it
consumed (invitations, suspensions, shortlists, audit records) are fed back to its handlers in the
order it took them in (its `processed_events` journal). Every rebuilt table must equal the live
one row for row.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from shared.consumers import input_order, journal
from shared.db import Database, sqlite_url
from shared.migrations import upgrade
from shared.schema import events
from shared.store import read_embedded

from . import handlers, projections
from .domain import Referral
from .personal import SealingEventStore, personal_keys

SOURCES = ("enrolment", "matching", "notification", "placement", "referral")
"""The stores holding what referral consumed (its own: the `referral.reopened` requests it wrote)."""


@dataclass
class TableDifference:
    table: str
    live_rows: int
    rebuilt_rows: int
    first_difference: str


@dataclass
class ReferralReplayReport:
    referrals: int = 0
    inputs: int = 0
    differences: list[TableDifference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


async def _rows(db: Database, table: Any) -> list[tuple[Any, ...]]:
    """The table's rows; the views' with the child's details opened (sealing is randomised, so
    the same details sealed twice differ: what must match is what they hold)."""
    async with db.read() as conn:
        if table is not projections.referral_views:
            return [tuple(r) for r in (await conn.execute(select(table).order_by(*table.primary_key.columns))).all()]
        rows = (await conn.execute(projections.views_with_key().order_by(table.c.referral_id))).all()
    return [tuple(projections.referral_of(r) if column.name == "referral" else r._mapping[column.name]
                  for column in table.columns) for r in rows]


async def replay_referral(data_dir: Path, output: Path,
                          progress: Callable[[int, int], None] | None = None) -> ReferralReplayReport:
    live = Database(sqlite_url(data_dir / "referral.db"), inline=True)
    output.unlink(missing_ok=True)
    fresh = Database(sqlite_url(output), inline=True)
    report = ReferralReplayReport()
    try:
        await upgrade(fresh, "referral")
        async with live.read() as conn:
            raised = select(events.c.stream_id).where(events.c.type == "referral-raised").order_by(events.c.position)
            referral_ids = [r.stream_id for r in (await conn.execute(raised)).all()]
            order = await input_order(conn)
            keys = [dict(r._mapping) for r in (await conn.execute(select(personal_keys))).all()]
        inputs = {e.id: e for e in await read_embedded(data_dir, SOURCES, {event_id for _, event_id in order})}
        total = len(referral_ids) + len(order)
        store = SealingEventStore(live, "placematch/referral")
        async with fresh.transaction() as conn:
            if keys:
                await conn.execute(personal_keys.insert(), keys)
            for index, referral_id in enumerate(referral_ids, start=1):
                referral = await store.load(Referral, referral_id)
                stream = await store.read_stream(referral_id)  # its envelopes: who offered and withdrew
                await projections.update_referral_view(conn, referral, stream)
                report.referrals += 1
                if progress:
                    progress(index, total)
            for index, (consumer, event_id) in enumerate(order, start=len(referral_ids) + 1):
                envelope = inputs.get(event_id)
                if envelope is None:
                    continue
                await journal(conn, consumer, event_id)
                await handlers.react(conn, envelope)
                report.inputs += 1
                if progress:
                    progress(index, total)
        for table in projections.metadata.sorted_tables:
            a, b = await _rows(live, table), await _rows(fresh, table)
            if a != b:
                first = next((f"live {x!r:.200} / rebuilt {y!r:.200}" for x, y in zip(a, b, strict=False) if x != y),
                             f"{len(a)} live rows, {len(b)} rebuilt")
                report.differences.append(TableDifference(table.name, len(a), len(b), first))
    finally:
        await live.dispose()
        await fresh.dispose()
    return report
