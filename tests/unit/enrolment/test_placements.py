"""Live capacity and the placement part of the quality score (issue 16, items 3 and 7)."""
from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from services.enrolment import handlers
from services.enrolment.app import create_app
from services.enrolment.domain import PROVIDER_RESCORED, Provider
from services.enrolment.scoring import (
    POLICY_V1,
    POLICY_V2,
    PlacementOutcomes,
    PlacementRecord,
    QualityScore,
    policy,
)
from shared.consumers import PoisonEvent
from shared.events import Envelope
from shared.settings import Settings
from shared.testing import auth, service_client
from tests.unit.enrolment.test_api import application
from tests.unit.enrolment.test_domain import GOOD, applicant, approved, as_inspection, outcomes, record, types

P1, P2 = "pl-1", "pl-2"


def opened(pid: str = "p-1") -> dict[str, Any]:
    return {"placement_id": P1, "provider_id": pid, "borough": "croydon", "referral_id": "r1", "origin": "award"}


def take(provider: Provider, type_: str, placement_id: str, data: dict[str, Any]) -> list[str]:
    return types(record(provider, provider.record_placement(type_, placement_id, data, str(uuid.uuid4()))))


class TestVacancies:
    def test_open_takes_a_place_once_and_the_end_returns_it(self) -> None:
        provider = approved()
        capacity = provider.profile.capacity  # type: ignore[union-attr]
        assert provider.vacancies == capacity
        assert take(provider, "placement-opened", P1, opened()) == ["provider-placement-recorded",
                                                                     "provider-vacancies-changed"]
        assert provider.vacancies == capacity - 1 and provider.placements_held == 1
        assert take(provider, "placement-opened", P1, opened()) == []  # redelivered: nothing
        # started after the award: the same place, no second one; a rescoring (a started placement now counts)
        assert take(provider, "placement-started", P1, {"started_on": "2026-01-05"}) == [
            "provider-placement-recorded", "provider-rescored"]
        assert provider.vacancies == capacity - 1
        assert take(provider, "placement-started", P1, {"started_on": "2026-01-05"}) == []
        ended = {"ended_on": "2026-03-01", "ending": "unplanned", "reason": "breakdown", "started_on": "2026-01-05"}
        assert take(provider, "placement-ended", P1, ended) == ["provider-placement-recorded",
                                                                "provider-vacancies-changed", "provider-rescored"]
        assert provider.vacancies == capacity
        assert take(provider, "placement-ended", P1, ended) == []
        # a late start of an ended placement never takes the place again
        assert take(provider, "placement-started", P1, {"started_on": "2026-01-05"}) == []
        assert provider.vacancies == capacity and provider.placements[P1].status == "ended"

    def test_collapse_returns_the_place_and_replay_gives_the_same_count(self) -> None:
        provider = approved()
        capacity = provider.profile.capacity  # type: ignore[union-attr]
        take(provider, "placement-opened", P1, opened())
        take(provider, "placement-opened", P2, opened())
        assert provider.vacancies == capacity - 2
        assert take(provider, "award-collapsed", P1, {"reason": "provider_withdrew"}) == [
            "provider-placement-recorded", "provider-vacancies-changed"]
        assert take(provider, "award-collapsed", P1, {"reason": "provider_withdrew"}) == []
        assert provider.vacancies == capacity - 1
        assert provider.placements[P1].status == "collapsed" and provider.placements[P2].status == "awarded"

    def test_vacancies_never_below_zero(self) -> None:
        provider = approved()
        for n in range(provider.profile.capacity + 2):  # type: ignore[union-attr]
            take(provider, "placement-opened", f"pl-{n}", opened())
        assert provider.vacancies == 0

    def test_not_ours(self) -> None:
        unknown = Provider("p-9")
        assert unknown.record_placement("placement-opened", P1, opened("p-9"), "e1") == []
        rejected = applicant()
        record(rejected, rejected.reject("no"))
        assert rejected.record_placement("placement-opened", P1, opened(), "e1") == []
        provider = approved()
        assert provider.record_placement("placement-review-due", P1, {}, "e1") == []


class TestScoringV2:
    def test_shrinkage_formula(self) -> None:
        # 100 * (stable + k * mean/100) / (n + k), k = 3, stability mean 80, achievement mean 50
        assert POLICY_V2.shrunk(Decimal(1), 2, Decimal(80)) == Decimal("68.00")  # (1 + 2.4) / 5
        assert POLICY_V2.shrunk(Decimal(0), 0, Decimal(80)) == Decimal("80.00")  # no evidence: the mean
        assert POLICY_V2.shrunk(Decimal(100), 100, Decimal(80)) == Decimal("99.42")  # (100 + 2.4) / 103
        evidence = PlacementOutcomes.of([
            PlacementRecord(P1, "ended", started_on=_d("2025-01-01"), ended_on=_d("2025-06-01"), ending="unplanned",
                            reason="breakdown"),
            PlacementRecord(P2, "active", started_on=_d("2025-02-01"), reviewed_on=_d("2025-08-01"),
                            achieved=1, rated=2),
            PlacementRecord("pl-3", "ended", started_on=_d("2024-01-01"), ended_on=_d("2025-03-01"),
                            ending="unplanned", reason="breakdown"),  # after 12 months: stable
            PlacementRecord("pl-4", "awarded"),  # not started: not counted
        ])
        assert (evidence.started, evidence.stable, evidence.reviewed) == (3, 2, 1)
        stability, achievement, placement = POLICY_V2.placement_parts(evidence)
        assert stability == Decimal("73.33")  # 100 * (2 + 2.4) / 6
        assert achievement == Decimal("50.00")  # 100 * (0.5 + 1.5) / 4
        assert placement == Decimal("61.67")  # (73.33 + 50.00) / 2, half up
        kpis = outcomes({"period": "2024-25", "kpis": {"attendance": 90, "ehcp_progress": 70}})
        score = POLICY_V2.score(as_inspection(GOOD), kpis, evidence)
        assert score.kpi_score == Decimal("80.00")
        assert score.outcomes_score == Decimal("70.84")  # (80.00 + 61.67) / 2 = 70.835, half up
        assert score.quality_score == Decimal("77.25")  # 0.7 * 80 + 0.3 * 70.84 = 77.252
        data = score.to_data()
        assert data["policy_version"] == 2 and data["placement_score"] == "61.67"
        assert data["inputs"]["placements"] == {"started": 3, "stable": 2, "reviewed": 1,
                                                "achieved_share_sum": "0.500000"}
        again = QualityScore.from_data(data)
        assert policy(2).score(again.inspection, again.outcomes, again.placements).to_data() == data

    def test_without_placements_v2_gives_v1_numbers(self) -> None:
        kpis = outcomes({"period": "2024-25", "kpis": {"attendance": 90, "ehcp_progress": 75}})
        for evidence in (None, PlacementOutcomes.of([PlacementRecord(P1, "awarded")])):
            one, two = POLICY_V1.score(as_inspection(GOOD), kpis), POLICY_V2.score(as_inspection(GOOD), kpis, evidence)
            assert (one.quality_score, one.outcomes_score) == (two.quality_score, two.outcomes_score)

    def test_version_one_stays_byte_for_byte(self) -> None:
        recorded = {"quality_score": "81.50", "policy_version": 1, "inspection_score": "80.00",
                    "outcomes_score": "85.00",
                    "inputs": {"inspection": GOOD, "outcomes": {"period": "2024-25",
                                                                "kpis": {"attendance": 90, "ehcp_progress": 80}}}}
        again = QualityScore.from_data(recorded)
        assert policy(1).score(again.inspection, again.outcomes).to_data() == recorded
        # folded as recorded: an old log's score is the recorded one, not a re-derived v2 one
        provider = Provider.replay("p-1", [("provider-applied", application()), (PROVIDER_RESCORED, recorded)])
        assert provider.quality_score == "81.50" and provider.score.policy_version == 1  # type: ignore[union-attr]

    def test_unplanned_end_lowers_the_score_and_kpis_still_count(self) -> None:
        provider = approved()
        record(provider, provider.record_outcomes(outcomes({"period": "2024-25", "kpis": {"attendance": 90}})))
        before = Decimal(provider.quality_score or "0")
        take(provider, "placement-opened", P1, opened())
        take(provider, "placement-started", P1, {"started_on": "2025-09-01"})
        take(provider, "placement-reviewed", P1, {"reviewed_on": "2025-12-01", "outcomes": [
            {"outcome": "a", "progress": "achieved"}, {"outcome": "b", "progress": "progressing"}]})
        take(provider, "placement-reviewed", P1, {"reviewed_on": "2025-10-01", "outcomes": [
            {"outcome": "a", "progress": "not_started"}]})  # older than the latest: ignored
        assert (provider.placements[P1].achieved, provider.placements[P1].rated) == (1, 2)
        take(provider, "placement-ended", P1, {"ended_on": "2026-01-10", "ending": "unplanned", "reason": "breakdown",
                                               "started_on": "2025-09-01"})
        score = provider.score
        assert score is not None and score.policy_version == 2
        assert score.kpi_score == Decimal("90.00") and score.stability_score == Decimal("60.00")  # 2.4 / 4
        assert score.achievement_score == Decimal("50.00")  # (0.5 + 1.5) / 4
        assert Decimal(provider.quality_score or "0") < before


def _d(text: str) -> Any:
    from datetime import date
    return date.fromisoformat(text)


async def test_reaction_counts_each_placement_once_and_shows_vacancies(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    app = create_app(settings)
    runtime = app.state.runtime
    async with service_client(app) as client:
        commissioner = auth(settings, "commissioner", "partnership")
        pid = (await client.post("/providers", json=application(capacity=2))).json()["id"]
        await client.post(f"/providers/{pid}/inspections", headers=commissioner, json=GOOD)
        await client.post(f"/providers/{pid}/approve", headers=commissioner, json={})
        event = Envelope(type="placement-opened", subject=P1, source="placematch/placement",
                         data={**opened(pid), "placement_id": P1})
        for _ in range(2):  # redelivery
            async with runtime.db.transaction() as conn:
                await handlers.react(runtime, conn, event)
        async with runtime.db.transaction() as conn:  # an off-framework provider not enrolled: ignored
            await handlers.react(runtime, conn, Envelope(type="placement-opened", subject=P2,
                                                         source="placematch/placement",
                                                         data={**opened("off-framework:St Anne's")}))
        view = (await client.get(f"/providers/{pid}", headers=commissioner)).json()
        assert (view["capacity"], view["vacancies"], view["placements_held"]) == (2, 1, 1)
        listed = (await client.get("/providers", headers=commissioner)).json()["items"]
        assert [p["vacancies"] for p in listed if p["id"] == pid] == [1]
        history = (await client.get(f"/providers/{pid}/history", headers=commissioner)).json()["events"]
        assert [e["type"] for e in history].count("provider-vacancies-changed") == 1
        with pytest.raises(PoisonEvent):
            async with runtime.db.transaction() as conn:
                await handlers.react(runtime, conn, Envelope(type="placement-started", subject=P1,
                                                             source="placematch/placement",
                                                             data={"provider_id": pid, "started_on": "not a date"}))
