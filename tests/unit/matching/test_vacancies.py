"""Live capacity (issue 16): eligibility judges by vacancies, old logs (no vacancies) by capacity."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from services.matching import projections as views
from services.matching.eligibility import evaluate
from services.matching.handlers import react
from services.matching.replay import ReplayRecorder
from shared.db import Database, sqlite_url
from shared.events import Envelope
from shared.migrations import upgrade
from shared.store import EventStore
from tests.unit.matching.test_eligibility import provider, referral
from tests.unit.matching.test_service import PROFILE, REF


def test_capacity_rule_uses_vacancies_when_known() -> None:
    assert evaluate(provider(capacity=4, placements_held=None), referral()).rules["capacity"]  # old log
    assert not evaluate(provider(capacity=0, placements_held=None), referral()).rules["capacity"]
    assert evaluate(provider(capacity=4, placements_held=3), referral()).rules["capacity"]
    assert not evaluate(provider(capacity=4, placements_held=4), referral()).rules["capacity"]
    assert not evaluate(provider(capacity=2, placements_held=5), referral()).rules["capacity"]
    assert provider(capacity=2, placements_held=5).vacancies == 0


def test_audit_facts_show_vacancies_only_once_reported() -> None:
    assert "vacancies" not in provider(placements_held=None).as_dict()  # old logs replay to the same bytes
    facts = provider(capacity=4, placements_held=1).as_dict()
    assert (facts["vacancies"], facts["placements_held"], facts["capacity"]) == (3, 1, 4)


def ev(type_: str, subject: str, data: dict[str, Any], source: str) -> Envelope:
    return Envelope(type=type_, subject=subject, data=data, source=f"placematch/{source}")


async def test_full_provider_is_not_invited_until_a_place_returns(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path / "matching.db"))
    await upgrade(db, "matching")
    store = EventStore(db, "placematch/matching")
    recorder = ReplayRecorder(store)
    try:
        async with db.transaction() as conn:
            await react(recorder, conn, ev("provider-vacancies-changed", "p1", {"placements_held": 1}, "enrolment"))
            assert await views.get_provider(conn, "p1") is None  # not in the directory before approval
            await react(recorder, conn, ev("provider-approved", "p1", {**PROFILE, "capacity": 1,
                                                                       "quality_score": "80.00",
                                                                       "placements_held": 1}, "enrolment"))
            assert (await views.get_provider(conn, "p1")).vacancies == 0  # type: ignore[union-attr]
            await react(recorder, conn, ev("referral-raised", "r1", REF, "referral"))
            [result] = await views.eligibility_for(conn, "r1")
            assert not result["invited"] and result["rules"]["capacity"] is False
            await react(recorder, conn, ev("provider-vacancies-changed", "p1",
                                           {"placements_held": 0, "vacancies": 1, "capacity": 1}, "enrolment"))
            [result] = await views.eligibility_for(conn, "r1")
            assert result["invited"] and result["rules"]["capacity"] is True
            # a capacity change keeps the places held: 2 - 0 free
            await react(recorder, conn, ev("provider-updated", "p1", {"changes": {"capacity": 2},
                                                                      "profile": {**PROFILE, "capacity": 2},
                                                                      "quality_score": "80.00"}, "enrolment"))
            facts = await views.get_provider(conn, "p1")
            assert facts is not None and (facts.placements_held, facts.vacancies) == (0, 2)
        matched = [e async for e in store.iter_all() if e.type == "referral-matched"]
        assert [m.data["newly_invited"] for m in matched] == [[], ["p1"]]
        assert matched[1].data["trigger"] == "provider-vacancies-changed"
    finally:
        await db.dispose()
