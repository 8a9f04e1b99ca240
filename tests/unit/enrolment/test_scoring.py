"""The versioned quality-score policy, both Ofsted scales, and the blocking rules."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.enrolment.requests import InspectionIn, OutcomesIn
from services.enrolment.scoring import (
    CURRENT_POLICY,
    POLICY_V1,
    Inspection,
    Outcomes,
    QualityScore,
    current_inspection,
    current_outcomes,
    policy,
)
from shared.errors import RuleViolation
from shared.vocabulary import format_score, two_places


def legacy(overall: str, on: str = "2024-03-01", **extra: Any) -> Inspection:
    return InspectionIn.model_validate({"framework": "ofsted_legacy", "overall": overall,
                                        "inspected_on": on, **extra}).to_inspection()


def report_card(areas: dict[str, str], safeguarding: str = "met",
                on: str = "2026-01-20") -> Inspection:
    return InspectionIn.model_validate({"framework": "ofsted_report_card", "inspected_on": on,
                                        "safeguarding": safeguarding, "areas": areas}).to_inspection()


def outcomes(kpis: dict[str, int], period: str = "2025-26") -> Outcomes:
    return OutcomesIn.model_validate({"period": period, "kpis": kpis}).to_outcomes()


class TestRounding:
    @pytest.mark.parametrize(("value", "expected"), [
        ("80", "80.00"), ("83.333333", "83.33"), ("83.335", "83.34"), ("66.665", "66.67"),
        ("0", "0.00"), ("100", "100.00"), ("2.5", "2.50"),
    ])
    def test_half_up_to_two_places(self, value: str, expected: str) -> None:
        assert format_score(Decimal(value)) == expected

    def test_none_stays_none(self) -> None:
        assert format_score(None) is None


class TestLegacyScale:
    @pytest.mark.parametrize(("grade", "points"), [
        ("outstanding", "100.00"), ("good", "80.00"), ("requires_improvement", "50.00"),
        ("inadequate", "0.00"),
    ])
    def test_grade_points(self, grade: str, points: str) -> None:
        score = POLICY_V1.score(legacy(grade), None)
        assert format_score(score.quality_score) == points
        assert score.outcomes_score is None

    def test_inadequate_blocks(self) -> None:
        assert "inadequate" in (legacy("inadequate").blocking_reason() or "")

    @pytest.mark.parametrize("grade", ["outstanding", "good", "requires_improvement"])
    def test_other_grades_do_not_block(self, grade: str) -> None:
        assert legacy(grade).blocking_reason() is None

    def test_optional_safeguarding_not_met_blocks(self) -> None:
        assert legacy("good", safeguarding="not_met").blocking_reason() is not None


class TestReportCardScale:
    def test_areas_are_averaged(self) -> None:
        card = report_card({"leadership": "strong", "achievement": "expected",
                            "inclusion": "exceptional"})
        assert POLICY_V1.score(card, None).quality_score == Decimal("85.00")

    def test_average_is_rounded_half_up(self) -> None:
        card = report_card({"leadership": "strong", "achievement": "expected",
                            "inclusion": "needs_attention"})  # (85 + 70 + 40) / 3 = 65
        assert POLICY_V1.score(card, None).quality_score == Decimal("65.00")
        card = report_card({"leadership": "strong", "achievement": "exceptional",
                            "inclusion": "needs_attention"})  # 225 / 3 = 75
        assert POLICY_V1.score(card, None).quality_score == Decimal("75.00")
        card = report_card({"a": "strong", "b": "needs_attention", "c": "needs_attention"})
        assert format_score(POLICY_V1.score(card, None).quality_score) == "55.00"
        card = report_card({"a": "exceptional", "b": "strong", "c": "strong"})  # 270/3 = 90
        assert format_score(POLICY_V1.score(card, None).quality_score) == "90.00"
        card = report_card({"a": "exceptional", "b": "expected", "c": "needs_attention"})
        assert format_score(POLICY_V1.score(card, None).quality_score) == "70.00"
        card = report_card({"a": "strong", "b": "expected", "c": "expected"})  # 225 / 3
        assert format_score(POLICY_V1.score(card, None).quality_score) == "75.00"
        card = report_card({"a": "strong", "b": "strong", "c": "expected"})  # 240 / 3
        assert format_score(POLICY_V1.score(card, None).quality_score) == "80.00"
        card = report_card({"a": "strong", "b": "needs_attention", "c": "urgent_improvement"})
        assert format_score(POLICY_V1.score(card, None).quality_score) == "41.67"  # 125/3

    @pytest.mark.parametrize(("grade", "points"), [
        ("exceptional", 100), ("strong", 85), ("expected", 70), ("needs_attention", 40),
        ("urgent_improvement", 0),
    ])
    def test_grade_points(self, grade: str, points: int) -> None:
        assert POLICY_V1.score(report_card({"achievement": grade}), None).quality_score \
            == Decimal(points)

    def test_safeguarding_not_met_blocks(self) -> None:
        card = report_card({"leadership": "exceptional"}, safeguarding="not_met")
        assert "safeguarding" in (card.blocking_reason() or "")

    @pytest.mark.parametrize("area", ["leadership", "leadership_and_governance"])
    def test_urgent_improvement_in_leadership_blocks(self, area: str) -> None:
        card = report_card({area: "urgent_improvement", "inclusion": "exceptional"})
        assert area in (card.blocking_reason() or "")

    def test_urgent_improvement_elsewhere_does_not_block(self) -> None:
        assert report_card({"leadership": "strong",
                            "achievement": "urgent_improvement"}).blocking_reason() is None


class TestCombinedWithOutcomes:
    def test_seventy_thirty(self) -> None:
        score = POLICY_V1.score(legacy("good"), outcomes({"attendance": 92, "ehcp_progress": 75,
                                                          "placement_stability": 88}))
        assert score.inspection_score == Decimal("80.00")
        assert score.outcomes_score == Decimal("85.00")
        assert score.quality_score == Decimal("81.50")

    def test_components_are_rounded_before_combining(self) -> None:
        # outcomes 100/3 = 33.333.. -> 33.33; 0.7 * 50 + 0.3 * 33.33 = 44.999 -> 45.00
        score = POLICY_V1.score(legacy("requires_improvement"),
                                outcomes({"a": 100, "b": 0, "c": 0}))
        assert score.outcomes_score == Decimal("33.33")
        assert score.quality_score == Decimal("45.00")

    def test_event_data_shape(self) -> None:
        score = POLICY_V1.score(legacy("good"), outcomes({"attendance": 85}))
        assert score.to_data() == {
            "quality_score": "81.50", "policy_version": 1, "inspection_score": "80.00",
            "outcomes_score": "85.00",
            "inputs": {"inspection": {"framework": "ofsted_legacy", "overall": "good",
                                      "inspected_on": "2024-03-01"},
                       "outcomes": {"period": "2025-26", "kpis": {"attendance": 85}}},
        }
        assert QualityScore.from_data(score.to_data()) == score

    def test_recomputable_from_event_inputs(self) -> None:
        data = POLICY_V1.score(report_card({"leadership": "strong"}),
                               outcomes({"x": 77, "y": 64})).to_data()
        recorded = QualityScore.from_data(data)
        again = policy(data["policy_version"]).score(recorded.inspection, recorded.outcomes)
        assert again.to_data() == data

    @given(st.sampled_from(["outstanding", "good", "requires_improvement", "inadequate"]),
           st.lists(st.integers(0, 100), min_size=1, max_size=8))
    def test_score_is_within_0_100_with_two_places(self, grade: str, kpis: list[int]) -> None:
        score = POLICY_V1.score(legacy(grade),
                                outcomes({f"k{i}": v for i, v in enumerate(kpis)}))
        assert Decimal(0) <= score.quality_score <= Decimal(100)
        assert score.quality_score == two_places(score.quality_score)
        assert score.quality_score.as_tuple().exponent == -2


class TestPolicyRegistry:
    def test_current_is_version_two_and_one_stays(self) -> None:
        assert CURRENT_POLICY.version == 2 and policy(1) is POLICY_V1

    def test_unknown_version(self) -> None:
        with pytest.raises(LookupError):
            policy(99)


class TestWhichEvidenceCounts:
    def test_latest_inspection_date_wins_even_if_recorded_earlier(self) -> None:
        newer, older = legacy("good", on="2025-01-01"), legacy("inadequate", on="2020-01-01")
        assert current_inspection([newer, older]) is newer

    def test_same_date_later_record_wins(self) -> None:
        first, second = legacy("good"), legacy("outstanding")
        assert current_inspection([first, second]) is second

    def test_no_inspection(self) -> None:
        assert current_inspection([]) is None

    def test_latest_period_wins_and_rerecord_replaces(self) -> None:
        a, b, c = outcomes({"x": 1}, "2025-26"), outcomes({"x": 2}, "2024-25"), \
            outcomes({"x": 3}, "2025-26")
        assert current_outcomes([a, b]) is a
        assert current_outcomes([a, b, c]) is c
        assert current_outcomes([]) is None


class TestWhichDatesCount:
    """Shapes are the request models' (test_requests.py); when a judgement can count is the domain's."""

    def test_future_inspection_refused_when_today_given(self) -> None:
        with pytest.raises(RuleViolation) as caught:
            legacy("good", on="2030-01-01").check(today=date(2026, 1, 1))
        assert (caught.value.field, caught.value.rule) == ("inspected_on", "not_in_future")

    def test_an_inspection_of_today_counts(self) -> None:
        legacy("good", on="2026-01-01").check(today=date(2026, 1, 1))

    @pytest.mark.parametrize("on", ["0001-01-01", "1989-12-31"])
    def test_implausibly_old_inspection_refused(self, on: str) -> None:
        with pytest.raises(RuleViolation) as caught:
            legacy("good", on=on).check()
        assert (caught.value.field, caught.value.rule) == ("inspected_on", "range")

    @pytest.mark.parametrize("period", ["1989-90", "2027-28"])
    def test_outcomes_of_a_year_not_begun_or_too_old_refused(self, period: str) -> None:
        with pytest.raises(RuleViolation) as caught:
            outcomes({"a": 1}, period).check(today=date(2026, 1, 1))
        assert (caught.value.field, caught.value.rule) == ("period", "range")

    @pytest.mark.parametrize("period", ["1990-91", "2026-27"])
    def test_outcomes_of_a_year_begun_count(self, period: str) -> None:
        outcomes({"a": 1}, period).check(today=date(2026, 1, 1))

    def test_event_data_is_the_inspection_as_posted(self) -> None:
        payload = {"framework": "ofsted_report_card", "inspected_on": "2026-01-20",
                   "safeguarding": "met",
                   "areas": {"leadership": "strong", "achievement": "expected"}}
        inspection = InspectionIn.model_validate(payload).to_inspection()
        assert inspection.to_data() == payload
        assert Inspection.from_data(inspection.to_data()) == inspection

    def test_century_rollover(self) -> None:
        assert outcomes({"a": 1}, "2099-00").period == "2099-00"
