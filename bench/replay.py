"""Replay: events/s rebuilding matching's read models (services.matching.replay.replay_matching)
from a synthetic but realistic log written straight into the embedded SQLite stores.

The log: the demo region's providers apply, are inspected, rescored and approved through the real
enrolment aggregate; referrals are raised through the real referral aggregate; invited-looking
providers offer; most referrals are awarded, some withdrawn or closed unfilled; a few providers are
rescored along the way. Events go into enrolment.db and referral.db with their hash chains, and
matching's `processed_events` journal lists them in the order matching took them in. Matching's own
decisions are then recorded by one untimed pass (what matching did live), and the timed pass
rebuilds everything into a fresh database and checks every decision is reproduced byte for byte.
`--replay-events N` sizes the whole log (inputs + matching's decisions, ≈ N).
"""
from __future__ import annotations

import random
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from services.demo import plan_providers, plan_referrals
from services.enrolment.domain import Provider
from services.enrolment.requests import ApplicationIn, InspectionIn, OutcomesIn
from services.matching.replay import replay_matching
from services.referral.api import ReferralIn
from services.referral.domain import Referral
from shared.aggregate import NewEvent
from shared.db import Database
from shared.events import Envelope, format_time
from shared.migrations import upgrade
from shared.store import GENESIS, link_hash

from .common import Infra, Row, today

# measured (844,579 events from 28,571 referrals): inputs + matching's decisions per referral in this mix
LOG_EVENTS_PER_REFERRAL = 29.6
CONSUMER = "matching-main"


class StoreWriter:
    """Appends envelopes straight into a service's SQLite events table, hash chains included."""

    def __init__(self, path: Path, source: str) -> None:
        self.conn = sqlite3.connect(path)
        self.source = source
        self.chain = GENESIS
        self.streams: dict[str, tuple[int, str]] = {}
        self.rows: list[tuple[Any, ...]] = []
        self.count = 0

    def append(self, stream_id: str, type_: str, data: dict[str, Any], at: datetime) -> Envelope:
        version, stream_hash = self.streams.get(stream_id, (0, GENESIS))
        envelope = Envelope(type=type_, subject=stream_id, data=data, source=self.source, sequence=version + 1,
                            time=format_time(at), correlationid=str(uuid.uuid4()), actor="bench:replay")
        body = envelope.to_json().decode()
        stream_hash = link_hash(stream_hash, body)
        self.chain = link_hash(self.chain, body)
        self.streams[stream_id] = (version + 1, stream_hash)
        self.rows.append((envelope.id, stream_id, version + 1, type_, envelope.time, body, stream_hash, self.chain))
        self.count += 1
        if len(self.rows) >= 5000:
            self.flush()
        return envelope

    def flush(self) -> None:
        self.conn.executemany("INSERT INTO events (event_id, stream_id, version, type, time, body, stream_hash, "
                              "chain_hash) VALUES (?,?,?,?,?,?,?,?)", self.rows)
        self.conn.commit()
        self.rows.clear()

    def close(self) -> None:
        self.flush()
        self.conn.close()


async def _migrate(data_dir: Path) -> None:
    for name in ("enrolment", "referral", "matching"):
        db = Database(f"sqlite+aiosqlite:///{(data_dir / f'{name}.db').as_posix()}")
        await upgrade(db, name)
        await db.dispose()


async def generate(data_dir: Path, referrals: int, seed: int = 5) -> int:
    """Write the input log; return the number of input events."""
    await _migrate(data_dir)
    rng = random.Random(seed)
    enrolment = StoreWriter(data_dir / "enrolment.db", "placematch/enrolment")
    referral_store = StoreWriter(data_dir / "referral.db", "placematch/referral")
    journal: list[str] = []
    clock = datetime.now(UTC) - timedelta(days=200)

    def tick() -> datetime:
        nonlocal clock
        clock += timedelta(seconds=rng.randint(5, 120))
        return clock

    # providers: apply, inspections/outcomes (rescored), approval — through the real aggregate
    day = today()
    plans = plan_providers(seed, 150, day)
    approved: list[tuple[str, Any]] = []
    for plan in plans:
        pid = str(uuid.uuid4())
        provider = Provider(pid)
        try:  # the plan's bodies as the API would take them (requests.py), then the aggregate's rules
            profile = ApplicationIn.model_validate(plan.application()).to_profile()
            inspections = [InspectionIn.model_validate(i).to_inspection() for i in plan.inspections]
            outcomes = [OutcomesIn.model_validate(o).to_outcomes() for o in plan.outcomes]
            commands: list[Callable[[], list[NewEvent]]] = [partial(provider.submit_application, profile)]
            commands += [partial(provider.record_inspection, i, today=day) for i in inspections]
            commands += [partial(provider.record_outcomes, o) for o in outcomes]
            if plan.decision == "approve":
                commands.append(partial(provider.approve, "accreditation complete"))
            for command in commands:
                for event in command():
                    journal.append(enrolment.append(pid, event.type, event.data, tick()).id)
                    provider.mutate([event])
        except Exception:
            continue
        if plan.decision == "approve":
            approved.append((pid, plan))

    # referrals: raised via the real aggregate; offers, then award / withdraw / close
    pending: dict[int, list[tuple[str, str, dict[str, Any]]]] = {}
    bodies = plan_referrals(seed, referrals, plans, day)
    for step, rplan in enumerate(bodies):
        rid = str(uuid.uuid4())
        raised = Referral(rid).raise_referral(rplan.borough, ReferralIn.model_validate(rplan.body).details(),
                                              datetime.now(UTC))[0]
        journal.append(referral_store.append(rid, raised.type, raised.data, tick()).id)
        need, ptype = rplan.body["primary_need"], rplan.body["placement_type"]
        fits = [(pid, p) for pid, p in approved if need in p.lots and ptype in p.placement_types]
        offers = []
        for pid, p in rng.sample(fits, k=min(len(fits), rng.choice((0, 1, 2, 2, 3, 3, 4)))):
            fee = p.base_fees.get(ptype) or rng.randint(150_000, 900_000)
            offer = {"offer_id": str(uuid.uuid4()), "provider_id": pid, "weekly_fee_pence": int(fee),
                     "start_date": rplan.body["required_from"], "notes": "We can meet the needs described",
                     "submitted_at": format_time(clock)}
            offers.append(offer)
            pending.setdefault(step + rng.randint(1, 6), []).append((rid, "offer-submitted", offer))
        end = step + 8 + rng.randint(0, 6)
        if rplan.scenario == "award" and offers:
            win = offers[0]
            pending.setdefault(end, []).append((rid, "placement-awarded", {
                "offer_id": win["offer_id"], "provider_id": win["provider_id"],
                "weekly_fee_pence": win["weekly_fee_pence"], "justification": "Parental preference",
                "top_ranked_offer_id": None,
                "not_selected": [{"offer_id": o["offer_id"], "provider_id": o["provider_id"]} for o in offers[1:]],
                "borough": rplan.borough, "awarded_at": format_time(clock)}))
        elif rplan.scenario == "withdraw":
            pending.setdefault(end, []).append((rid, "referral-withdrawn", {"reason": "Need met in borough"}))
        elif rplan.scenario in ("close", "award"):
            pending.setdefault(end, []).append((rid, "referral-closed", {
                "reason": "unfilled", "unfilled": True, "borough": rplan.borough}))
        for later_rid, type_, data in pending.pop(step, []):
            journal.append(referral_store.append(later_rid, type_, data, tick()).id)
        if step % 250 == 249 and approved:  # a provider is re-inspected now and then
            pid, _ = rng.choice(approved)
            score = f"{rng.randint(40, 100)}.00"
            journal.append(enrolment.append(pid, "provider-rescored", {
                "quality_score": score, "policy_version": 1, "inspection_score": score, "outcomes_score": None,
                "inputs": {"inspection": {}, "outcomes": None}}, tick()).id)
    for step in sorted(pending):
        for rid, type_, data in pending[step]:
            journal.append(referral_store.append(rid, type_, data, tick()).id)
    enrolment.close()
    referral_store.close()

    conn = sqlite3.connect(data_dir / "matching.db")
    processed_at = format_time(datetime.now(UTC))
    conn.executemany("INSERT INTO processed_events (consumer, event_id, processed_at, seq) VALUES (?,?,?,?)",
                     [(CONSUMER, eid, processed_at, i) for i, eid in enumerate(journal, start=1)])
    conn.commit()
    conn.close()
    return len(journal)


def _count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()


async def run(infra: Infra, quick: bool, replay_events: int = 1_000_000) -> list[Row]:
    target = min(replay_events, 20_000) if quick else replay_events
    referrals = max(20, round(target / LOG_EVENTS_PER_REFERRAL))
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmpdir:
        data_dir = Path(tmpdir)
        g0 = time.perf_counter()
        inputs = await generate(data_dir, referrals)
        generated = time.perf_counter() - g0
        # matching's live decisions: one untimed pass records them (and warms the caches)
        r0 = time.perf_counter()
        recorded = await replay_matching(data_dir, data_dir / "recorded.db")
        record_seconds = time.perf_counter() - r0
        (data_dir / "matching.db").unlink()
        shutil.move(data_dir / "recorded.db", data_dir / "matching.db")
        log_events = sum(_count(data_dir / f"{n}.db") for n in ("enrolment", "referral", "matching"))
        started = time.perf_counter()
        report = await replay_matching(data_dir, data_dir / "replayed.db")
        seconds = time.perf_counter() - started
    note = (f"log of {log_events:,} events ({inputs:,} inputs, {report.decisions_recorded:,} decisions); "
            f"{'all decisions reproduced' if report.ok else f'{len(report.differences)} differences!'}; "
            f"generated in {generated:.0f} s, recording pass {record_seconds:.0f} s")
    return [
        Row("replay", "rebuild matching: log events/s", log_events / seconds, None, "events/s", note=note),
        Row("replay", "rebuild matching: inputs/s", report.inputs / seconds, None, "inputs/s",
            note=f"{seconds:.1f} s for {report.inputs:,} inputs (recorded={recorded.inputs:,})"),
    ]
