"""Replay: rebuild matching's read models from the event log and re-derive every decision.

Inputs are the enrolment and referral stores' events and matching's own policy changes, fed back
in the order matching originally took them in (its `processed_events` journal). The decisions
re-derived into a fresh database (`referral-matched`, `shortlist-ranked`) must equal the recorded
ones byte for byte (canonical JSON); any difference is reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


from shared.aggregate import NewEvent
from shared.consumers import input_order, journal
from shared.db import Database, sqlite_url
from shared.events import dumps
from shared.migrations import upgrade
from shared.settings import Settings
from shared.store import EventStore, read_embedded

from .api import POLICY_JOURNAL
from .handlers import Matching
from .ranking import POLICY_STREAM, RankingPolicy

DECISIONS = ("referral-matched", "shortlist-ranked")
BATCH = 200


@dataclass
class Difference:
    stream_id: str
    index: int
    recorded: str | None
    replayed: str | None


@dataclass
class ReplayReport:
    inputs: int = 0
    decisions_recorded: int = 0
    decisions_replayed: int = 0
    differences: list[Difference] = field(default_factory=list)
    missing_inputs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences and not self.missing_inputs


async def _decisions(store: EventStore) -> dict[str, list[str]]:
    by_stream: dict[str, list[str]] = {}
    async for envelope in store.iter_all(types=DECISIONS):
        by_stream.setdefault(envelope.subject, []).append(f"{envelope.type} {dumps(envelope.data).decode()}")
    return by_stream


async def replay_matching(
    data_dir: Path,
    output: Path,
    *,
    quality_weight: str | None = None,
    price_weight: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Replay the embedded stores under `data_dir` into a fresh database at `output`.

    With `quality_weight`/`price_weight`, the replay starts from that policy instead of the
    default: a way to see which decisions a different weighting would have changed.
    """
    live = Database(sqlite_url(data_dir / "matching.db"), inline=True)
    output.unlink(missing_ok=True)
    fresh = Database(sqlite_url(output), inline=True)
    report = ReplayReport()
    try:
        async with live.read() as conn:
            order = await input_order(conn)
        wanted = {event_id for _, event_id in order}
        inputs = {e.id: e for e in await read_embedded(data_dir, ("enrolment", "referral", "matching"), wanted)}
        recorded = await _decisions(EventStore(live, "placematch/matching"))

        await upgrade(fresh, "matching")
        store = EventStore(fresh, "placematch/matching")
        matching = Matching(store, Settings().topic)
        if quality_weight is not None or price_weight is not None:
            async with fresh.transaction() as conn:
                policy = await store.load(RankingPolicy, POLICY_STREAM, conn)
                await store.append(conn, POLICY_STREAM, policy.version,
                                   policy.change(quality_weight or "0.60", price_weight or "0.40"))
        # Inputs go in one at a time, as live, but a transaction carries BATCH of them: nothing else
        # writes to the fresh database, and a commit per input would cost more than the input.
        for start in range(0, len(order), BATCH):
            async with fresh.transaction() as conn:
                for index, (consumer, event_id) in enumerate(order[start:start + BATCH], start=start + 1):
                    envelope = inputs.get(event_id)
                    if envelope is None:
                        report.missing_inputs.append(event_id)
                        continue
                    await journal(conn, consumer, event_id)
                    if consumer == POLICY_JOURNAL:
                        policy = await store.load(RankingPolicy, POLICY_STREAM, conn)
                        events = [NewEvent(envelope.type, envelope.data)]
                        await store.append(conn, POLICY_STREAM, policy.version, events)
                        policy.mutate(events)
                        await matching.rerank_all_open(conn, policy.current, envelope.id)
                    else:
                        await matching.handle(conn, envelope)
                    report.inputs += 1
            if progress:
                progress(min(start + BATCH, len(order)), len(order))
        replayed = await _decisions(store)
    finally:
        for db in (live, fresh):
            await db.dispose()

    report.decisions_recorded = sum(map(len, recorded.values()))
    report.decisions_replayed = sum(map(len, replayed.values()))
    for stream_id in sorted(set(recorded) | set(replayed)):
        left, right = recorded.get(stream_id, []), replayed.get(stream_id, [])
        for i in range(max(len(left), len(right))):
            a = left[i] if i < len(left) else None
            b = right[i] if i < len(right) else None
            if a != b:
                report.differences.append(Difference(stream_id, i, a, b))
    return report


def difference_summary(diff: Difference, width: int = 160) -> dict[str, Any]:
    return {"referral": diff.stream_id, "decision": diff.index + 1,
            "recorded": (diff.recorded or "—")[:width], "replayed": (diff.replayed or "—")[:width]}
