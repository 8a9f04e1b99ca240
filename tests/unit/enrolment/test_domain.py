"""The Provider aggregate: every transition, every refusal, automatic suspension, rescoring."""
from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from services.enrolment.domain import Provider, ProviderStatus
from services.enrolment.profile import Profile, ProfileChanges
from services.enrolment.requests import ApplicationIn, InspectionIn, OutcomesIn, ProviderChanges
from services.enrolment.scoring import Inspection, Outcomes
from shared.aggregate import NewEvent
from shared.errors import DomainError, InvalidTransition, NotFound, RuleViolation

PROFILE_KEYS = {"name", "urn", "kind", "lots", "age_min", "age_max", "genders",
                "placement_types", "capacity", "location", "boroughs_served", "contact_email"}
GOOD = {"framework": "ofsted_legacy", "overall": "good", "inspected_on": "2024-03-01"}
INADEQUATE = {"framework": "ofsted_legacy", "overall": "inadequate",
              "inspected_on": "2025-06-01"}
CARD = {"framework": "ofsted_report_card", "inspected_on": "2026-01-20", "safeguarding": "met",
        "areas": {"leadership": "strong", "achievement": "expected", "inclusion": "exceptional"}}
KPIS = {"period": "2025-26", "kpis": {"attendance": 92, "ehcp_progress": 75,
                                      "placement_stability": 88}}


def application(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Riverside School", "urn": "100001", "kind": "independent_special_school",
        "lots": ["ASD", "SEMH"], "age_min": 5, "age_max": 19, "genders": ["female", "male"],
        "placement_types": ["day", "residential_38"], "capacity": 4,
        "location": {"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115},
        "boroughs_served": ["croydon", "lambeth"],
        "contact_email": "admissions@riverside.example", **overrides,
    }


def profile(**overrides: Any) -> Profile:
    return ApplicationIn.model_validate(application(**overrides)).to_profile()


def as_inspection(payload: dict[str, Any]) -> Inspection:
    return InspectionIn.model_validate(payload).to_inspection()


def outcomes(payload: dict[str, Any]) -> Outcomes:
    return OutcomesIn.model_validate(payload).to_outcomes()


def changes(body: dict[str, Any]) -> ProfileChanges:
    return ProviderChanges.model_validate(body).to_changes()


def record(provider: Provider, events: list[NewEvent]) -> list[NewEvent]:
    provider.mutate(events)
    return events


def types(events: list[NewEvent]) -> list[str]:
    return [event.type for event in events]


def applicant() -> Provider:
    provider = Provider("p-1")
    record(provider, provider.submit_application(profile()))
    return provider


def approved(inspection: dict[str, Any] | None = GOOD) -> Provider:
    provider = applicant()
    if inspection:
        record(provider, provider.record_inspection(as_inspection(inspection)))
    record(provider, provider.approve())
    return provider


def suspended() -> Provider:
    provider = approved()
    record(provider, provider.suspend("Safeguarding concern raised by Croydon LADO"))
    return provider


def rejected() -> Provider:
    provider = applicant()
    record(provider, provider.reject("Insurance certificate missing"))
    return provider


def assert_unchanged(provider: Provider, command: Any, error: type[DomainError]) -> DomainError:
    """A refused command raises and leaves the aggregate exactly as it was."""
    before = (provider.status, provider.version, provider.profile, provider.score,
              list(provider.inspections), provider.suspension)
    with pytest.raises(error) as caught:
        command()
    assert (provider.status, provider.version, provider.profile, provider.score,
            list(provider.inspections), provider.suspension) == before
    return caught.value


class TestApplication:
    def test_applied_event_carries_profile_at_top_level(self) -> None:
        provider = Provider("p-1")
        events = provider.submit_application(profile())
        assert types(events) == ["provider-applied"]
        assert set(events[0].data) == PROFILE_KEYS
        assert events[0].data["lots"] == ["ASD", "SEMH"]

    def test_command_does_not_mutate(self) -> None:
        provider = Provider("p-1")
        provider.submit_application(profile())
        assert provider.status is None and provider.version == 0

    def test_applied_state(self) -> None:
        provider = applicant()
        assert provider.status is ProviderStatus.APPLIED
        assert provider.version == 1
        assert provider.profile is not None and provider.profile.capacity == 4
        assert provider.quality_score is None

    def test_cannot_apply_twice(self) -> None:
        error = assert_unchanged(applicant(),
                                 lambda: applicant().submit_application(profile()),
                                 InvalidTransition)
        assert error.rule == "already_applied"

    def test_upside_down_age_range_refused(self) -> None:
        provider = Provider("p-1")
        with pytest.raises(RuleViolation) as caught:
            provider.submit_application(profile(age_min=16, age_max=11))
        assert (caught.value.field, caught.value.rule) == ("age_max", "age_range_order")

    def test_commands_on_unknown_provider_are_not_found(self) -> None:
        provider = Provider("ghost")
        for command in (provider.approve, lambda: provider.reject("x"),
                        lambda: provider.suspend("x"), provider.reinstate,
                        lambda: provider.update(changes({"capacity": 1})),
                        lambda: provider.record_inspection(as_inspection(GOOD)),
                        lambda: provider.record_outcomes(outcomes(KPIS))):
            with pytest.raises(NotFound):
                command()


class TestApproval:
    def test_approval_carries_what_matching_needs(self) -> None:
        provider = applicant()
        record(provider, provider.record_inspection(as_inspection(GOOD)))
        events = record(provider, provider.approve())
        assert types(events) == ["provider-approved"]
        assert set(events[0].data) >= PROFILE_KEYS
        assert events[0].data["quality_score"] == "80.00"
        assert events[0].data["capacity"] == 4
        assert events[0].data["boroughs_served"] == ["croydon", "lambeth"]
        assert provider.status is ProviderStatus.APPROVED

    def test_approval_without_inspection_has_null_score(self) -> None:
        provider = applicant()
        events = provider.approve()
        assert events[0].data["quality_score"] is None
        assert events[0].data["reason"] is None

    def test_approval_reason_is_kept(self) -> None:
        assert applicant().approve("Accredited: DBS, finance, insurance")[0].data["reason"] \
            == "Accredited: DBS, finance, insurance"

    @pytest.mark.parametrize("make", [approved, suspended, rejected])
    def test_only_an_applicant_can_be_approved(self, make: Any) -> None:
        provider = make()
        error = assert_unchanged(provider, provider.approve, InvalidTransition)
        assert error.status == 409
        assert error.rule == f"cannot_approve_{provider.status}"

    @pytest.mark.parametrize("inspection", [
        INADEQUATE,
        {**CARD, "safeguarding": "not_met"},
        {**CARD, "areas": {"leadership": "urgent_improvement", "inclusion": "strong"}},
    ])
    def test_blocking_inspection_blocks_approval(self, inspection: dict[str, Any]) -> None:
        provider = applicant()
        events = record(provider, provider.record_inspection(as_inspection(inspection)))
        assert "provider-suspended" not in types(events)
        error = assert_unchanged(provider, provider.approve, InvalidTransition)
        assert (error.field, error.rule) == ("inspection", "blocking_inspection")

    def test_newer_good_inspection_lifts_the_block(self) -> None:
        provider = applicant()
        record(provider, provider.record_inspection(as_inspection(INADEQUATE)))
        record(provider, provider.record_inspection(as_inspection(CARD)))
        assert types(provider.approve()) == ["provider-approved"]

    def test_older_inspection_recorded_late_does_not_lift_the_block(self) -> None:
        provider = applicant()
        record(provider, provider.record_inspection(as_inspection(INADEQUATE)))
        events = record(provider, provider.record_inspection(as_inspection(GOOD)))  # 2024, older
        assert types(events) == ["provider-inspected"]  # score unchanged: no rescore
        with pytest.raises(InvalidTransition):
            provider.approve()


class TestRejection:
    def test_reject_with_reason(self) -> None:
        provider = applicant()
        events = record(provider, provider.reject("Insurance certificate missing"))
        assert events == [NewEvent("provider-rejected", {"reason": "Insurance certificate missing"})]
        assert provider.status is ProviderStatus.REJECTED
        assert provider.rejection_reason == "Insurance certificate missing"

    @pytest.mark.parametrize("make", [approved, suspended, rejected])
    def test_only_an_applicant_can_be_rejected(self, make: Any) -> None:
        provider = make()
        assert_unchanged(provider, lambda: provider.reject("x"), InvalidTransition)

    def test_rejected_provider_is_closed_to_changes(self) -> None:
        provider = rejected()
        for command in (lambda: provider.update(changes({"capacity": 1})),
                        lambda: provider.record_inspection(as_inspection(GOOD)),
                        lambda: provider.record_outcomes(outcomes(KPIS))):
            error = assert_unchanged(provider, command, InvalidTransition)
            assert error.rule == "provider_rejected"


class TestSuspension:
    def test_manual_suspension(self) -> None:
        provider = approved()
        events = record(provider, provider.suspend("Safeguarding concern"))
        assert events == [NewEvent("provider-suspended",
                                   {"reason": "Safeguarding concern", "automatic": False})]
        assert provider.status is ProviderStatus.SUSPENDED
        assert provider.suspension is not None and not provider.suspension.automatic

    @pytest.mark.parametrize("make", [applicant, suspended, rejected])
    def test_only_an_approved_provider_can_be_suspended(self, make: Any) -> None:
        provider = make()
        error = assert_unchanged(provider, lambda: provider.suspend("x"), InvalidTransition)
        assert error.status == 409

    @pytest.mark.parametrize(("inspection", "words"), [
        (INADEQUATE, "inadequate"),
        ({**CARD, "safeguarding": "not_met"}, "safeguarding"),
        ({**CARD, "areas": {"leadership": "urgent_improvement"}}, "leadership"),
    ])
    def test_blocking_inspection_suspends_an_approved_provider(self, inspection: dict[str, Any],
                                                               words: str) -> None:
        provider = approved()
        events = record(provider, provider.record_inspection(as_inspection(inspection)))
        assert types(events) == ["provider-inspected", "provider-rescored",
                                 "provider-suspended"]
        assert events[-1].data["automatic"] is True
        assert words in events[-1].data["reason"]
        assert provider.status is ProviderStatus.SUSPENDED

    def test_blocking_inspection_on_suspended_provider_does_not_suspend_again(self) -> None:
        provider = suspended()
        events = provider.record_inspection(as_inspection(INADEQUATE))
        assert "provider-suspended" not in types(events)

    def test_older_blocking_inspection_does_not_suspend(self) -> None:
        provider = approved(CARD)  # 2026 report card
        events = provider.record_inspection(as_inspection(INADEQUATE))  # 2025
        assert types(events) == ["provider-inspected"]


class TestReinstatement:
    def test_reinstate_carries_profile_and_score(self) -> None:
        provider = suspended()
        events = record(provider, provider.reinstate("LADO investigation closed"))
        assert types(events) == ["provider-reinstated"]
        assert set(events[0].data) >= PROFILE_KEYS
        assert events[0].data["quality_score"] == "80.00"
        assert events[0].data["reason"] == "LADO investigation closed"
        assert provider.status is ProviderStatus.APPROVED and provider.suspension is None

    @pytest.mark.parametrize("make", [applicant, approved, rejected])
    def test_only_a_suspended_provider_can_be_reinstated(self, make: Any) -> None:
        provider = make()
        error = assert_unchanged(provider, provider.reinstate, InvalidTransition)
        assert error.rule == f"cannot_reinstate_{provider.status}"

    def test_blocked_until_a_better_inspection(self) -> None:
        provider = approved()
        record(provider, provider.record_inspection(as_inspection(INADEQUATE)))
        error = assert_unchanged(provider, provider.reinstate, InvalidTransition)
        assert error.rule == "blocking_inspection"
        record(provider, provider.record_inspection(as_inspection(CARD)))
        assert provider.status is ProviderStatus.SUSPENDED  # a good inspection does not reinstate
        record(provider, provider.reinstate())
        assert provider.status is ProviderStatus.APPROVED

    def test_suspend_again_after_reinstatement(self) -> None:
        provider = suspended()
        record(provider, provider.reinstate())
        assert types(provider.suspend("again")) == ["provider-suspended"]


class TestUpdates:
    @pytest.mark.parametrize("make", [applicant, approved, suspended])
    def test_update_records_changes_and_full_profile(self, make: Any) -> None:
        provider = make()
        events = record(provider, provider.update(changes({"capacity": 7, "lots": ["ASD"]})))
        assert types(events) == ["provider-updated"]
        data = events[0].data
        assert data["changes"] == {"capacity": 7, "lots": ["ASD"]}
        assert set(data["profile"]) == PROFILE_KEYS
        assert data["profile"]["capacity"] == 7
        assert "quality_score" in data
        assert provider.profile is not None and provider.profile.capacity == 7

    def test_update_carries_current_score(self) -> None:
        provider = approved()
        assert provider.update(changes({"capacity": 1}))[0].data["quality_score"] == "80.00"

    def test_no_op_update_records_nothing(self) -> None:
        assert applicant().update(changes({"capacity": 4})) == []

    def test_empty_update_refused(self) -> None:
        provider = applicant()
        assert_unchanged(provider, lambda: provider.update(changes({})), RuleViolation)

    @pytest.mark.parametrize(("body", "field", "rule"), [
        ({"age_min": 20}, "age_min", "age_range_order"),
        ({"urn": "999"}, "urn", "immutable"),
        ({"capacity": None}, "capacity", "required"),
    ])
    def test_bad_update_refused(self, body: dict[str, Any], field: str, rule: str) -> None:
        provider = approved()
        error = assert_unchanged(provider, lambda: provider.update(changes(body)), RuleViolation)
        assert (error.field, error.rule) == (field, rule)


class TestScoring:
    def test_inspection_rescoring_carries_inputs_and_policy(self) -> None:
        provider = applicant()
        events = record(provider, provider.record_inspection(as_inspection(CARD)))
        assert types(events) == ["provider-inspected", "provider-rescored"]
        assert events[0].data == CARD
        rescored = events[1].data
        assert rescored["quality_score"] == "85.00"
        assert rescored["policy_version"] == 2
        assert rescored["inputs"] == {"inspection": CARD, "outcomes": None, "placements": None}
        assert provider.quality_score == "85.00"

    def test_outcomes_combine_seventy_thirty(self) -> None:
        provider = approved()
        events = record(provider, provider.record_outcomes(outcomes(KPIS)))
        assert types(events) == ["provider-outcomes-recorded", "provider-rescored"]
        assert events[0].data == KPIS
        assert events[1].data["outcomes_score"] == "85.00"
        assert events[1].data["quality_score"] == "81.50"

    def test_outcomes_without_inspection_do_not_score(self) -> None:
        provider = applicant()
        events = record(provider, provider.record_outcomes(outcomes(KPIS)))
        assert types(events) == ["provider-outcomes-recorded"]
        assert provider.quality_score is None
        events = record(provider, provider.record_inspection(as_inspection(GOOD)))
        assert events[-1].data["quality_score"] == "81.50"

    def test_unchanged_score_is_not_rescored(self) -> None:
        provider = approved()
        events = provider.record_inspection(as_inspection({**GOOD, "inspected_on": "2025-03-01"}))
        assert types(events) == ["provider-inspected"]

    def test_future_inspection_refused_when_today_given(self) -> None:
        provider = applicant()
        with pytest.raises(RuleViolation):
            provider.record_inspection(as_inspection({**GOOD, "inspected_on": "2030-01-01"}),
                                       today=date(2026, 1, 1))


class TestReplay:
    def test_replay_rebuilds_the_same_state(self) -> None:
        provider = Provider("p-1")
        history: list[NewEvent] = []
        for command in (lambda: provider.submit_application(profile()),
                        lambda: provider.record_inspection(as_inspection(CARD)),
                        lambda: provider.record_outcomes(outcomes(KPIS)),
                        provider.approve,
                        lambda: provider.update(changes({"capacity": 2})),
                        lambda: provider.record_inspection(as_inspection(
                            {**CARD, "inspected_on": "2026-02-01", "safeguarding": "not_met"})),
                        lambda: provider.record_inspection(as_inspection(
                            {**CARD, "inspected_on": "2026-03-01"})),
                        lambda: provider.reinstate("re-inspected")):
            history += record(provider, command())
        replayed = Provider.replay("p-1", [(e.type, e.data) for e in history])
        assert replayed.version == provider.version == len(history)
        assert replayed.status is ProviderStatus.APPROVED
        for attribute in ("status", "profile", "score", "inspections", "outcomes",
                          "suspension"):
            assert getattr(replayed, attribute) == getattr(provider, attribute)

    def test_unknown_event_types_are_ignored(self) -> None:
        provider = applicant()
        provider.apply("provider-audited", {"x": 1})
        assert provider.status is ProviderStatus.APPLIED
