"""Replay: rebuild the placement service's views from the event log and compare byte for byte.

Inputs are the referral and matching events the service consumed, fed back in the order it took
them in (its `processed_events` journal; by event time when only the topics are at hand): they
re-derive every placement an award opened. The placements' own recorded events that are not such
reactions (the commands: start, funding, reviews, fee changes, endings, collapses, off-framework
openings, review notices) are then appended as recorded. Two comparisons, canonical JSON:

- every placement stream, re-derived + re-appended, against the recorded one (type and data);
- every view row of the fresh database against the live one (when the live database is at hand).
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.aggregate import NewEvent
from shared.bus import Bus
from shared.consumers import PoisonEvent, input_order, journal
from shared.db import Database, sqlite_url
from shared.events import Envelope
from shared.migrations import upgrade
from shared.replay import ReplayRecorder, Report, event_line, journaled_order, mismatches
from shared.store import EventStore, read_embedded

from . import projections as views
from .handlers import TOPICS, react

CONSUMER = "placement-main"


@dataclass
class Difference:
    where: str  # "stream <placement id>" or "view <table>"
    index: int
    recorded: str | None
    replayed: str | None


@dataclass
class ReplayReport(Report[Difference]):
    events_recorded: int = 0
    events_replayed: int = 0
    view_rows_compared: int = 0


@dataclass
class ReplayInputs:
    inputs: dict[str, Envelope]
    order: list[tuple[str, str]]
    recorded: list[Envelope]
    """The placements' own events, in the order recorded (by stream and sequence within a stream)."""
    source: str


def is_reaction(envelope: Envelope) -> bool:
    """An event the service derived from a consumed input (replay derives it again)."""
    return envelope.type == "placement-opened" and envelope.data.get("origin") == "award"


async def inputs_from_stores(data_dir: Path) -> ReplayInputs:
    live = Database(sqlite_url(data_dir / "placement.db"), inline=True)
    try:
        async with live.read() as conn:
            order = await input_order(conn)
        recorded = [e async for e in EventStore(live, "placematch/placement").iter_all()]
    finally:
        await live.dispose()
    wanted = {event_id for _, event_id in order}
    inputs = {e.id: e for e in await read_embedded(data_dir, ("referral", "matching"), wanted)}
    return ReplayInputs(inputs, order, recorded, f"stores in {data_dir}")


async def inputs_from_bus(bus: Bus, topic: Callable[[str], str], *, journal_url: str | None = None) -> ReplayInputs:
    """The topics from the beginning (a fresh consumer group): inputs from `placematch.referral` and
    `placematch.matching`, the recorded events from `placematch.placement`. The order: the service's
    journal when its database is given, else the bus's log order where it keeps one across topics,
    else event time (ties by stream and sequence)."""
    journaled = await journaled_order(journal_url)
    input_topics = {topic(t) for t in TOPICS}
    messages = await bus.read_topics([*sorted(input_topics), topic("placement")],
                                     f"{topic('replay')}-placement-{uuid.uuid4().hex[:12]}")
    inputs: dict[str, Envelope] = {}
    own: dict[str, Envelope] = {}
    for message in messages:
        envelope = Envelope.from_kafka(message.value, message.headers or None)
        (inputs if message.topic in input_topics else own).setdefault(envelope.id, envelope)
    if journaled is not None:
        order = journaled
    else:
        consumed = list(inputs.values())
        if not bus.total_order:
            consumed.sort(key=lambda e: (e.time, e.subject, e.sequence))
        order = [(CONSUMER, e.id) for e in consumed]
    recorded = sorted(own.values(), key=lambda e: (e.subject, e.sequence))
    how = "the journal" if journal_url else "the log" if bus.total_order else "event time"
    return ReplayInputs(inputs, order, recorded, f"topics {', '.join(sorted(input_topics))} (order: {how})")


async def replay_placement(data_dir: Path, output: Path, *, source: ReplayInputs | None = None,
                           live_url: str | None = None) -> ReplayReport:
    """Replay into a fresh SQLite database at `output` and compare. The live views are read from
    `live_url`, else `<data_dir>/placement.db` when it exists; without either only streams are compared."""
    source = source or await inputs_from_stores(data_dir)
    output.unlink(missing_ok=True)
    fresh = Database(sqlite_url(output), inline=True)
    report = ReplayReport(source=source.source)
    try:
        await upgrade(fresh, "placement")
        store = EventStore(fresh, "placematch/placement", publish=False)
        runtime = ReplayRecorder(store)
        for consumer, event_id in source.order:
            envelope = source.inputs.get(event_id)
            if envelope is None:
                report.missing_inputs.append(event_id)
                continue
            try:
                async with fresh.transaction() as conn:
                    await journal(conn, consumer, envelope.id)
                    await react(runtime, conn, envelope)
                report.inputs += 1
            except PoisonEvent:  # live sent it to the dead-letter topic; so does replay
                report.dead_lettered.append(envelope.id)
        async with fresh.transaction() as conn:
            for envelope in source.recorded:
                if is_reaction(envelope):
                    continue
                await store.append(conn, envelope.subject, None, [NewEvent(envelope.type, envelope.data)])
                if envelope.type == "placement-opened" or await views.get_view(conn, envelope.subject):
                    await views.project(conn, envelope.subject, [(envelope.type, envelope.data)])
                # else: the opening was not re-derived; the stream comparison reports it
        replayed: dict[str, list[str]] = {}
        async for envelope in store.iter_all():
            replayed.setdefault(envelope.subject, []).append(event_line(envelope.type, envelope.data))
        async with fresh.read() as conn:
            fresh_rows = await views.dump_tables(conn)
    finally:
        await fresh.dispose()

    recorded: dict[str, list[str]] = {}
    for envelope in source.recorded:
        recorded.setdefault(envelope.subject, []).append(event_line(envelope.type, envelope.data))
    report.events_recorded = sum(map(len, recorded.values()))
    report.events_replayed = sum(map(len, replayed.values()))
    for stream_id in sorted(set(recorded) | set(replayed)):
        _compare(report, f"stream {stream_id}", recorded.get(stream_id, []), replayed.get(stream_id, []))

    url = live_url or (sqlite_url(data_dir / "placement.db") if (data_dir / "placement.db").exists() else None)
    if url is not None:
        live = Database(url)
        try:
            async with live.read() as conn:
                live_rows = await views.dump_tables(conn)
        finally:
            await live.dispose()
        for table in sorted(live_rows):
            report.view_rows_compared += len(live_rows[table])
            _compare(report, f"view {table}", live_rows[table], fresh_rows.get(table, []))
    return report


def _compare(report: ReplayReport, where: str, left: list[str], right: list[str]) -> None:
    report.differences += [Difference(where, i, a, b) for i, a, b in mismatches(left, right)]


def difference_summary(diff: Difference, width: int = 160) -> dict[str, Any]:
    return {"where": diff.where, "item": diff.index + 1,
            "recorded": (diff.recorded or "—")[:width], "replayed": (diff.replayed or "—")[:width]}
