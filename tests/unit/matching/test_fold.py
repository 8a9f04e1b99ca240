"""The in-memory fold (replay) against the live reactions: over the same log, the decisions the
live code records into a database are the ones the fold re-derives, in one process or several."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from bench.replay import generate
from services.matching.replay import inputs_from_stores, rebuild_matching, replay_matching


@pytest.fixture(scope="module")
def recorded_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log of 80 referrals against the demo providers, matching's decisions recorded by the
    live reactions (service.py) over a database."""
    import asyncio

    data_dir = tmp_path_factory.mktemp("fold")

    async def build() -> None:
        await generate(data_dir, 80, seed=11)
        live = await rebuild_matching(data_dir, data_dir / "recorded.db")
        assert live.decisions_recorded == 0 and live.decisions_replayed > 80  # nothing recorded yet
        (data_dir / "matching.db").unlink()
        shutil.move(data_dir / "recorded.db", data_dir / "matching.db")

    asyncio.run(build())
    return data_dir


@pytest.mark.parametrize("workers", [1, 2, 3])
async def test_fold_reproduces_the_live_decisions(recorded_log: Path, workers: int) -> None:
    report = await replay_matching(recorded_log, workers=workers)
    assert report.ok, report.differences[:1]
    source = await inputs_from_stores(recorded_log)
    assert report.inputs == len(source.order)
    assert report.decisions_recorded == report.decisions_replayed == sum(map(len, source.recorded.values()))
    assert not list((recorded_log / "replay").glob("*")) if (recorded_log / "replay").exists() else True


@pytest.mark.parametrize("workers", [1, 2])
async def test_what_if_differs_as_the_live_rebuild_does(recorded_log: Path, tmp_path: Path, workers: int) -> None:
    live = await rebuild_matching(recorded_log, tmp_path / "what-if.db", quality_weight="0.20", price_weight="0.80")
    folded = await replay_matching(recorded_log, quality_weight="0.20", price_weight="0.80", workers=workers)
    assert live.differences, "the weights should change some shortlists"
    assert folded.differences == live.differences
    assert folded.decisions_replayed == live.decisions_replayed


async def test_a_tampered_decision_is_named(recorded_log: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "tampered"
    shutil.copytree(recorded_log, data_dir)
    conn = sqlite3.connect(data_dir / "matching.db")
    stream_id, body = conn.execute("SELECT stream_id, body FROM events WHERE type = 'shortlist-ranked' "
                                   "ORDER BY position LIMIT 1").fetchone()
    conn.execute("UPDATE events SET body = ? WHERE stream_id = ? AND type = 'shortlist-ranked' AND body = ?",
                 (body.replace('"rank":1', '"rank":9', 1), stream_id, body))
    conn.commit()
    conn.close()
    for workers in (1, 2):
        report = await replay_matching(data_dir, workers=workers)
        assert not report.ok
        assert [d.stream_id for d in report.differences] == [stream_id]
        assert '"rank":9' in (report.differences[0].recorded or "")
        assert '"rank":1' in (report.differences[0].replayed or "")


def test_the_fold_reacts_to_what_live_matching_reacts_to() -> None:
    """A reaction added to service.py without its counterpart in fold.py would replay as ignored."""
    from services.matching import fold, handlers

    assert set(fold._REACTIONS) == set(handlers.REACTIONS)
    assert set(handlers.REACTIONS) == fold.PROVIDER_EVENTS | fold.REFERRAL_EVENTS


async def test_live_capacity_folds_as_live_matching_decides(tmp_path: Path) -> None:
    """provider-vacancies-changed (issue 16), an upsert keeping the places held, an offer and a
    rescore: the live reactions over a database and the fold give the same decision lines."""
    from services.matching.fold import Fold
    from services.matching.handlers import react
    from services.matching.replay import DECISIONS, ReplayRecorder, _decision_line
    from services.matching.service import POLICY_JOURNAL
    from shared.db import Database, sqlite_url
    from shared.migrations import upgrade
    from shared.store import EventStore
    from tests.unit.matching.test_service import PROFILE, REF
    from tests.unit.matching.test_vacancies import ev

    log = [
        ev("provider-vacancies-changed", "p1", {"placements_held": 1}, "enrolment"),
        ev("provider-approved", "p1", {**PROFILE, "capacity": 1, "quality_score": "80.00", "placements_held": 1},
           "enrolment"),
        ev("referral-raised", "r1", REF, "referral"),
        ev("provider-vacancies-changed", "p1", {"placements_held": 0, "vacancies": 1, "capacity": 1}, "enrolment"),
        ev("provider-updated", "p1", {"changes": {"capacity": 2}, "profile": {**PROFILE, "capacity": 2},
                                      "quality_score": "80.00"}, "enrolment"),
        ev("offer-submitted", "r1", {"offer_id": "o1", "provider_id": "p1", "weekly_fee_pence": 250000,
                                     "start_date": "2027-01-04", "submitted_at": "2026-12-01T10:00:00Z"}, "referral"),
        ev("provider-rescored", "p1", {"quality_score": "70.00"}, "enrolment"),
        ev("provider-vacancies-changed", "p1", {"placements_held": "many"}, "enrolment"),  # unusable: dead-lettered
    ]
    db = Database(sqlite_url(tmp_path / "matching.db"))
    await upgrade(db, "matching")
    store = EventStore(db, "placematch/matching")
    try:
        for envelope in log:
            try:
                async with db.transaction() as conn:
                    await react(ReplayRecorder(store), conn, envelope)
            except Exception as error:
                assert type(error).__name__ == "PoisonEvent"
        live = [_decision_line(e) async for e in store.iter_all(types=DECISIONS)]
    finally:
        await db.dispose()
    fold, poisoned = Fold(), 0
    for envelope in log:
        try:
            fold.feed("matching-main", envelope, POLICY_JOURNAL)
        except Exception as error:
            assert type(error).__name__ == "PoisonEvent"
            poisoned += 1
    assert poisoned == 1
    assert len(live) >= 3 and fold.decisions["r1"] == live
