"""Replay: rebuild matching's read models from the event log and re-derive every decision.

Inputs are the enrolment and referral events and matching's own policy changes — read from the
services' stores, or from the Kafka topics with a fresh consumer group — fed back in the order
matching originally took them in (its `processed_events` journal; by event time when only the
topics are at hand). The decisions re-derived into a fresh database (`referral-matched`,
`shortlist-ranked`) must equal the recorded ones byte for byte (canonical JSON); any difference
is reported.
"""
from __future__ import annotations

import multiprocessing
import os
import sqlite3
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.aggregate import NewEvent
from shared.bus import Bus
from shared.consumers import PoisonEvent, journal
from shared.db import Database, sqlite_url
from shared.events import Envelope
from shared.migrations import upgrade
from shared.replay import ReplayRecorder, Report, event_line, journaled_order, mismatches
from shared.store import EventStore

from .fold import REFERRAL_EVENTS, Fold, owned, partition_of
from .handlers import react
from .ranking import POLICY_STREAM, RankingPolicy
from .service import POLICY_JOURNAL, replay_policy_change

DECISIONS = ("referral-matched", "shortlist-ranked")
BATCH = 200


@dataclass
class Difference:
    stream_id: str
    index: int
    recorded: str | None
    replayed: str | None


@dataclass
class ReplayReport(Report[Difference]):
    decisions_recorded: int = 0
    decisions_replayed: int = 0


@dataclass
class ReplayInputs:
    """What a replay needs: every input by id, the order to feed them in, the recorded decisions."""

    inputs: dict[str, Envelope]
    order: list[tuple[str, str]]  # (consumer, event id)
    recorded: dict[str, list[str]]  # referral id -> its decisions, in stream order
    source: str


def _decision_line(envelope: Envelope) -> str:
    return event_line(envelope.type, envelope.data)


async def _decisions(store: EventStore) -> dict[str, list[str]]:
    by_stream: dict[str, list[str]] = {}
    async for envelope in store.iter_all(types=DECISIONS):
        by_stream.setdefault(envelope.subject, []).append(_decision_line(envelope))
    return by_stream


def _sqlite(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


async def inputs_from_stores(data_dir: Path) -> ReplayInputs:
    """The embedded stores under `data_dir`: inputs from enrolment, referral and matching's own
    policy changes; the order from matching's journal; the decisions from matching's store.

    Read with one plain query per store (sqlite3, read-only): only the rows replay needs are
    parsed — the decisions and policy changes of matching's store, not its notification and
    audit records."""
    conn = _sqlite(data_dir / "matching.db")
    try:
        order = conn.execute("SELECT consumer, event_id FROM processed_events ORDER BY seq, processed_at").fetchall()
        recorded: dict[str, list[str]] = {}
        own: list[Envelope] = []
        marks = ",".join("?" * len(DECISIONS))
        for position, type_, body in conn.execute(
                f"SELECT position, type, body FROM events WHERE type IN ({marks}, 'policy-changed') ORDER BY position",
                DECISIONS):
            envelope = Envelope.from_json(body, position=position)
            if type_ == "policy-changed":
                own.append(envelope)
            else:
                recorded.setdefault(envelope.subject, []).append(_decision_line(envelope))
    finally:
        conn.close()
    order = [(consumer, event_id) for consumer, event_id in order]
    wanted = {event_id for _, event_id in order}
    inputs: dict[str, Envelope] = {}
    for name in ("enrolment", "referral"):
        path = data_dir / f"{name}.db"
        if not path.exists():
            continue
        conn = _sqlite(path)
        try:
            for event_id, position, body in conn.execute("SELECT event_id, position, body FROM events "
                                                         "ORDER BY position"):
                if event_id in wanted:
                    inputs[event_id] = Envelope.from_json(body, position=position)
        finally:
            conn.close()
    inputs.update((e.id, e) for e in own if e.id in wanted)
    return ReplayInputs(inputs, order, recorded, f"stores in {data_dir}")


async def inputs_from_bus(bus: Bus, topic: Callable[[str], str], *, journal_url: str | None = None) -> ReplayInputs:
    """The topics, from the beginning, read by a fresh consumer group: inputs from
    `placematch.enrolment`, `placematch.referral` and the policy changes on `placematch.matching`;
    the decisions recorded on `placematch.matching`.

    The order: matching's journal when its database is given (`journal_url`; exactly as live).
    Without it, the bus's own order where it keeps one across topics (the local bus), else event
    time (ties by stream and sequence), with policy changes placed by their time. Matching may have
    taken two near-simultaneous events from different Kafka topics the other way round; a decision
    that changes because of that is listed as a difference, and `journal_url` settles it. On a
    running system, decisions still on their way to the topic show as differences without the
    journal; replay when it is quiet, or give the journal.
    """
    journaled = await journaled_order(journal_url)  # before the topics: every input it lists is on them by then
    group = f"{topic('replay')}-{uuid.uuid4().hex[:12]}"
    inputs_topics = {topic("enrolment"), topic("referral")}
    messages = await bus.read_topics([topic("enrolment"), topic("referral"), topic("matching")], group)
    inputs: dict[str, Envelope] = {}
    decisions: dict[str, Envelope] = {}
    for message in messages:  # at-least-once delivery: a copy of an event is the same event
        envelope = Envelope.from_kafka(message.value, message.headers or None)
        if message.topic in inputs_topics or envelope.type == "policy-changed":
            inputs.setdefault(envelope.id, envelope)
        elif envelope.type in DECISIONS:
            decisions.setdefault(envelope.id, envelope)
    consumer = "matching-main"  # its name in the fresh journal; only the policy journal's name matters
    if journaled is not None:
        order = journaled
    else:
        policies = sorted((e for e in inputs.values() if e.type == "policy-changed"), key=lambda e: e.time)
        consumed = [e for e in inputs.values() if e.type != "policy-changed"]  # in log order
        if not bus.total_order:  # Kafka keeps order per partition only
            consumed.sort(key=lambda e: (e.time, e.subject, e.sequence))
        order = []
        for envelope in consumed:  # a policy change goes in before the first input recorded after it
            while policies and policies[0].time <= envelope.time:
                order.append((POLICY_JOURNAL, policies.pop(0).id))
            order.append((consumer, envelope.id))
        order += [(POLICY_JOURNAL, p.id) for p in policies]
    # On a live system, decisions caused by inputs taken in after the journal was read are left out
    recorded: dict[str, list[str]] = {}
    fed = {event_id for _, event_id in order}
    for envelope in sorted(decisions.values(), key=lambda e: (e.subject, e.sequence)):
        if journaled is None or envelope.causationid is None or envelope.causationid in fed:
            recorded.setdefault(envelope.subject, []).append(_decision_line(envelope))
    how = "matching's journal" if journal_url else "the log" if bus.total_order else "event time"
    return ReplayInputs(inputs, order, recorded, f"topics {', '.join(sorted(inputs_topics))} (order: {how})")


async def replay_matching(
    data_dir: Path,
    output: Path | None = None,
    *,
    quality_weight: str | None = None,
    price_weight: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    source: ReplayInputs | None = None,
    workers: int | None = None,
) -> ReplayReport:
    """Re-derive every decision as an in-memory fold (fold.py) and compare them with the recorded ones.

    Inputs come from the embedded stores under `data_dir`, or from `source` (e.g. `inputs_from_bus`).
    With `quality_weight`/`price_weight`, the replay starts from that policy instead of the
    default: a way to see which decisions a different weighting would have changed. Nothing is
    written (`output` is accepted for the callers of the database rebuild, and ignored). The log is
    folded by referral in `workers` processes (default: the usable cores, for logs large enough
    to pay for them); the report is the same as one fold over the whole log's.
    """
    source = source or await inputs_from_stores(data_dir)
    return fold_matching(source, quality_weight=quality_weight, price_weight=price_weight, progress=progress,
                         workers=workers)


async def rebuild_matching(
    data_dir: Path,
    output: Path,
    *,
    quality_weight: str | None = None,
    price_weight: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    source: ReplayInputs | None = None,
) -> ReplayReport:
    """Replay through the live reactions (service.py) into a fresh database at `output`, and
    compare the decisions with the recorded ones: every read model built, notification and audit
    records appended, as matching itself would. `replay_matching` (the in-memory fold) is what
    `placematch replay` runs; this one writes a matching store from a log (bench/replay.py's
    recording pass) and is the reference the fold is tested against.

    Inputs come from the embedded stores under `data_dir`, or from `source` (e.g. `inputs_from_bus`).
    With `quality_weight`/`price_weight`, the replay starts from that policy instead of the
    default: a way to see which decisions a different weighting would have changed.
    """
    source = source or await inputs_from_stores(data_dir)
    inputs, order = source.inputs, source.order
    output.unlink(missing_ok=True)
    fresh = Database(sqlite_url(output), inline=True)
    report = ReplayReport(source=source.source)
    try:
        await upgrade(fresh, "matching")
        store = EventStore(fresh, "placematch/matching", publish=False)
        runtime = ReplayRecorder(store)
        if quality_weight is not None or price_weight is not None:
            async with fresh.transaction() as conn:
                policy = await store.load(RankingPolicy, POLICY_STREAM, conn)
                await store.append(conn, POLICY_STREAM, policy.version,
                                   policy.change(quality_weight or "0.60", price_weight or "0.40"))
        async def feed(conn: Any, consumer: str, envelope: Envelope) -> None:
            await journal(conn, consumer, envelope.id)
            if consumer == POLICY_JOURNAL:
                await replay_policy_change(runtime, conn, envelope)
            else:
                await react(runtime, conn, envelope)

        # Inputs go in one at a time, as live, but a transaction carries BATCH of them: nothing else
        # writes to the fresh database, and a commit per input would cost more than the input.
        for start in range(0, len(order), BATCH):
            batch = []
            for consumer, event_id in order[start:start + BATCH]:
                if event_id in inputs:
                    batch.append((consumer, inputs[event_id]))
                else:
                    report.missing_inputs.append(event_id)
            try:
                async with fresh.transaction() as conn:
                    for consumer, envelope in batch:
                        await feed(conn, consumer, envelope)
                report.inputs += len(batch)
            except PoisonEvent:  # only from topics: live sent it to the dead-letter topic; so does replay
                for consumer, envelope in batch:  # the batch again, one transaction per input
                    try:
                        async with fresh.transaction() as conn:
                            await feed(conn, consumer, envelope)
                        report.inputs += 1
                    except PoisonEvent:
                        report.dead_lettered.append(envelope.id)
            if progress:
                progress(min(start + BATCH, len(order)), len(order))
        replayed = await _decisions(store)
    finally:
        await fresh.dispose()

    _compare(report, source.recorded, replayed)
    return report


def _compare(report: ReplayReport, recorded: dict[str, list[str]], replayed: dict[str, list[str]]) -> None:
    report.decisions_recorded = sum(map(len, recorded.values()))
    report.decisions_replayed = sum(map(len, replayed.values()))
    for stream_id in sorted(set(recorded) | set(replayed)):
        report.differences += [Difference(stream_id, i, a, b)
                               for i, a, b in mismatches(recorded.get(stream_id, []), replayed.get(stream_id, []))]


def difference_summary(diff: Difference, width: int = 160) -> dict[str, Any]:
    return {"referral": diff.stream_id, "decision": diff.index + 1,
            "recorded": (diff.recorded or "—")[:width], "replayed": (diff.replayed or "—")[:width]}


# --------------------------------------------------------------------------- the in-memory fold

PARALLEL_FROM = 20_000
"""Inputs from which the fold is split across processes (below, forking costs more than it saves)."""


@dataclass
class _PartResult:
    inputs: int = 0
    decisions_replayed: int = 0
    differences: list[Difference] = field(default_factory=list)
    dead_lettered: list[tuple[int, str]] = field(default_factory=list)  # (position in the order, event id)
    shared_dead: set[str] = field(default_factory=set)  # provider and policy inputs dead-lettered here


_SHARED: tuple[ReplayInputs, dict[str, int], list[NewEvent]] | None = None
"""What the forked workers inherit (the inputs are not pickled to them)."""


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _fold_part(part: int, parts: int, progress: Callable[[int, int], None] | None = None) -> _PartResult:
    assert _SHARED is not None
    source, partition, policy_events = _SHARED
    fold = Fold()
    if policy_events:
        fold.change_policy(policy_events)
    result = _PartResult()
    inputs, order = source.inputs, source.order
    for index, (consumer, event_id) in enumerate(order):
        envelope = inputs.get(event_id)
        if envelope is None:
            continue
        own = owned(envelope, partition, part)
        if not own:
            continue
        shared = envelope.type not in REFERRAL_EVENTS
        try:
            fold.feed(consumer, envelope, POLICY_JOURNAL)
            if not shared or part == 0:
                result.inputs += 1
        except PoisonEvent:  # live sent it to the dead-letter topic; so does replay
            if shared:
                result.shared_dead.add(event_id)
            if not shared or part == 0:
                result.dead_lettered.append((index, event_id))
        if progress and index % 1000 == 0:
            progress(index, len(order))
    replayed = fold.decisions
    recorded = source.recorded
    mine = [r for r in recorded if partition.get(r, 0) == part] if parts > 1 else list(recorded)
    compared = ReplayReport()
    _compare(compared, {r: recorded[r] for r in mine}, replayed)
    result.decisions_replayed = compared.decisions_replayed
    result.differences = compared.differences
    return result


def fold_matching(source: ReplayInputs, *, quality_weight: str | None = None, price_weight: str | None = None,
                  progress: Callable[[int, int], None] | None = None, workers: int | None = None) -> ReplayReport:
    """`replay_matching` on inputs already read: fold, partitioned by referral across `workers` processes."""
    global _SHARED
    report = ReplayReport(source=source.source)
    report.missing_inputs = [event_id for _, event_id in source.order if event_id not in source.inputs]
    policy_events: list[NewEvent] = []
    if quality_weight is not None or price_weight is not None:
        policy_events = RankingPolicy().change(quality_weight or "0.60", price_weight or "0.40")
    parts = workers if workers is not None else usable_cores() if len(source.order) >= PARALLEL_FROM else 1
    parts = max(1, parts)
    partition = partition_of(source.order, source.inputs, parts) if parts > 1 else {}
    _SHARED = (source, partition, policy_events)
    try:
        if parts == 1:
            results = [_fold_part(0, 1, progress)]
        else:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=parts, mp_context=context) as pool:
                futures = [pool.submit(_fold_part, part, parts) for part in range(parts)]
                results = []
                for done, future in enumerate(futures, start=1):
                    results.append(future.result())
                    if progress:
                        progress(len(source.order) * done // parts, len(source.order))
            if any(r.shared_dead != results[0].shared_dead for r in results):
                # a provider or policy input failed in some partitions only (on one referral's data):
                # live rolled it back for all of them, so the partitions' folds do not add up; fold once
                results = [_fold_part(0, 1, progress)]
    finally:
        _SHARED = None
    report.inputs = sum(r.inputs for r in results)
    report.decisions_recorded = sum(map(len, source.recorded.values()))
    report.decisions_replayed = sum(r.decisions_replayed for r in results)
    report.differences = sorted((d for r in results for d in r.differences), key=lambda d: (d.stream_id, d.index))
    report.dead_lettered = [event_id for _, event_id in sorted(d for r in results for d in r.dead_lettered)]
    if progress:
        progress(len(source.order), len(source.order))
    return report
