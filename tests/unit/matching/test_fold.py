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
