"""Unit tests of the Referral aggregate: every transition and every rule, no I/O."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from services.referral.domain import Referral
from services.referral.offers import Invitation, InvitationPending, Shortlist, ShortlistPending
from shared.aggregate import NewEvent
from shared.errors import Forbidden, InvalidTransition, NotFound, RuleViolation
from shared.vocabulary import DeclineReason, Gender, NeedCode

from .factories import (
    INVITED,
    NEEDS_PROFILE,
    NOW,
    PROVIDER_A,
    PROVIDER_B,
    PROVIDER_C,
    REFERRAL_ID,
    details,
    offer,
    raised,
    with_offer,
)


def assert_violation(excinfo: pytest.ExceptionInfo[RuleViolation], field: str, rule: str | None = None) -> None:
    assert excinfo.value.status == 422
    assert excinfo.value.field == field
    if rule is not None:
        assert excinfo.value.rule == rule


# --- raise ------------------------------------------------------------------------------------


def test_raise_emits_referral_raised_with_the_full_referral() -> None:
    referral = Referral(REFERRAL_ID)
    events = referral.raise_referral("croydon", details(), NOW)
    assert [e.type for e in events] == ["referral-raised"]
    assert events[0].data == {
        "borough": "croydon",
        "child_ref": "CR-2026-0042",
        "birth_date": "2014-05-02",
        "age_at_start": 12,
        "gender": "male",
        "primary_need": "ASD",
        "secondary_needs": ["SLCN"],
        "placement_type": "day",
        "required_from": "2026-09-01",
        "location": {"postcode": "CR0 1NX", "lat": 51.372, "lon": -0.099, "district": "CR0"},
        "max_travel_km": 30,
        "needs_profile": NEEDS_PROFILE,
        "outcomes": ["Attend school full time by spring term", "Use a communication aid at home"],
        "offer_deadline": "2026-07-01T17:00:00Z",
        "preferred_provider_id": None,
        "raised_at": "2026-06-01T09:00:00Z",
    }
    assert referral.status == "new"  # commands never mutate
    referral.mutate(events)
    assert referral.status == "open" and referral.borough == "croydon" and referral.version == 1
    assert referral.details is not None and referral.details.age_at_start == 12


def test_raise_accepts_optional_fields_absent() -> None:
    data = Referral(REFERRAL_ID).raise_referral(
        "croydon", details(location=None, max_travel_km=None, secondary_needs=()), NOW)[0].data
    assert data["location"] is None and data["max_travel_km"] is None
    assert data["secondary_needs"] == [] and data["preferred_provider_id"] is None


def test_raise_requires_a_borough_and_happens_once() -> None:
    with pytest.raises(Forbidden):
        Referral(REFERRAL_ID).raise_referral("", details(), NOW)
    with pytest.raises(InvalidTransition):
        raised().raise_referral("croydon", details(), NOW)


def test_raise_checks_the_rules_of_the_details() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        Referral(REFERRAL_ID).raise_referral("croydon", details(secondary_needs=(NeedCode.ASD,)), NOW)
    assert_violation(excinfo, "secondary_needs", "not_primary")


def test_preferred_provider_is_kept() -> None:
    assert raised(preferred_provider_id=UUID(PROVIDER_B)).to_data()["preferred_provider_id"] == PROVIDER_B


# --- amend ------------------------------------------------------------------------------------


def test_amend_records_only_the_changes_and_the_full_referral() -> None:
    referral = raised()
    events = referral.amend("croydon", {"max_travel_km": 40, "gender": Gender.MALE}, NOW)
    assert [e.type for e in events] == ["referral-amended"]
    assert events[0].data["changes"] == {"max_travel_km": 40}
    assert events[0].data["referral"]["max_travel_km"] == 40
    assert events[0].data["referral"]["borough"] == "croydon"
    referral.mutate(events)
    assert referral.to_data()["max_travel_km"] == 40 and referral.status == "open"


def test_amend_of_dates_carries_the_new_age_at_start() -> None:
    events = raised().amend("croydon", {"required_from": date(2027, 9, 1)}, NOW)
    assert events[0].data["changes"] == {"required_from": "2027-09-01", "age_at_start": 13}


def test_amend_that_changes_nothing_is_refused() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        raised().amend("croydon", {"gender": Gender.MALE}, NOW)
    assert_violation(excinfo, "body", "no_changes")
    with pytest.raises(RuleViolation) as excinfo:
        raised().amend("croydon", {}, NOW)
    assert_violation(excinfo, "body", "not_empty")


def test_amend_validates_the_result() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        raised().amend("croydon", {"primary_need": NeedCode.SLCN}, NOW)  # now equals a secondary need
    assert_violation(excinfo, "secondary_needs", "not_primary")
    with pytest.raises(RuleViolation) as excinfo:
        raised().amend("croydon", {"child_ref": None}, NOW)
    assert_violation(excinfo, "child_ref", "required")


def test_amend_by_another_borough_is_not_found_and_after_withdrawal_invalid() -> None:
    with pytest.raises(NotFound):
        raised().amend("lambeth", {"max_travel_km": 40}, NOW)
    referral = raised()
    referral.mutate(referral.withdraw("croydon", "no longer needed"))
    with pytest.raises(InvalidTransition):
        referral.amend("croydon", {"max_travel_km": 40}, NOW)


# --- withdraw / close -------------------------------------------------------------------------


def test_withdraw() -> None:
    referral = raised()
    events = referral.withdraw("croydon", "Family moved away")
    assert events == [NewEvent("referral-withdrawn", {"reason": "Family moved away"})]
    referral.mutate(events)
    assert referral.status == "withdrawn"
    with pytest.raises(InvalidTransition):
        referral.withdraw("croydon", None)
    with pytest.raises(NotFound):
        raised().withdraw("lambeth", None)


def test_close_by_borough() -> None:
    referral = raised()
    events = referral.close("croydon")
    assert events == [NewEvent("referral-closed", {"reason": "by_borough", "unfilled": True, "borough": "croydon"})]
    referral.mutate(events)
    assert referral.status == "closed" and referral.close_reason == "by_borough"
    with pytest.raises(InvalidTransition):
        referral.close("croydon")
    with pytest.raises(NotFound):
        raised().close("lambeth")


def test_close_unfilled_only_at_or_after_the_deadline() -> None:
    referral = raised()
    deadline = datetime(2026, 7, 1, 17, 0, tzinfo=UTC)
    assert not referral.is_due_for_closing(deadline - timedelta(seconds=1))
    with pytest.raises(InvalidTransition):
        referral.close_unfilled(deadline - timedelta(seconds=1))
    assert referral.is_due_for_closing(deadline)
    events = referral.close_unfilled(deadline)
    assert events == [NewEvent("referral-closed", {"reason": "unfilled", "unfilled": True, "borough": "croydon"})]
    referral.mutate(events)
    assert referral.status == "closed" and not referral.is_due_for_closing(deadline)
    with pytest.raises(InvalidTransition):
        referral.close_unfilled(deadline)


def test_close_unfilled_refused_while_an_offer_stands() -> None:
    referral = with_offer(raised(), "offer-1", PROVIDER_A)
    deadline = datetime(2026, 7, 1, 17, 0, tzinfo=UTC)
    assert not referral.is_due_for_closing(deadline)
    with pytest.raises(InvalidTransition):
        referral.close_unfilled(deadline)
    referral.mutate(referral.withdraw_offer(PROVIDER_A, "offer-1", None))
    assert referral.is_due_for_closing(deadline)


# --- offers -----------------------------------------------------------------------------------


def test_invited_provider_offers() -> None:
    referral = raised()
    events = offer(referral)
    assert events == [NewEvent("offer-submitted", {
        "offer_id": "offer-1", "provider_id": PROVIDER_A, "weekly_fee_pence": 425000, "start_date": "2026-09-01",
        "notes": "Place in our ASD unit", "submitted_at": "2026-06-01T09:00:00Z"})]
    referral.mutate(events)
    assert [o.offer_id for o in referral.active_offers()] == ["offer-1"]
    assert offer(raised(), notes=None)[0].data["notes"] == ""


@pytest.mark.parametrize(("invitation", "error", "rule"), [
    (Invitation(known=True, invited=False), Forbidden, "not_invited"),
    (Invitation(known=True, invited=True, suspended=True), Forbidden, "provider_suspended"),
    (Invitation(known=False, invited=False), InvitationPending, "invitation_pending"),
])
def test_who_may_offer(invitation: Invitation, error: type[Exception], rule: str) -> None:
    with pytest.raises(error) as excinfo:
        offer(raised(), invitation=invitation)
    assert excinfo.value.rule == rule  # type: ignore[attr-defined]


def test_offer_before_the_invitation_is_known_must_be_retried() -> None:
    with pytest.raises(InvitationPending) as excinfo:
        offer(raised(), invitation=Invitation(known=False, invited=False))
    assert excinfo.value.status == 409 and excinfo.value.retry_after > 0


def test_offer_on_unknown_referral_is_not_found_after_the_deadline_or_close_refused() -> None:
    with pytest.raises(NotFound):
        offer(Referral(REFERRAL_ID))
    with pytest.raises(InvalidTransition) as excinfo:
        offer(raised(), now=datetime(2026, 7, 1, 17, 0, tzinfo=UTC))
    assert excinfo.value.rule == "deadline_passed"
    referral = raised()
    referral.mutate(referral.close("croydon"))
    with pytest.raises(InvalidTransition):
        offer(referral)


def test_offer_start_is_checked() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        offer(raised(), start_date=date(2026, 5, 31))
    assert_violation(excinfo, "start_date", "not_in_past")


def test_one_standing_offer_per_provider() -> None:
    referral = with_offer(raised(), "offer-1", PROVIDER_A)
    with pytest.raises(InvalidTransition):
        offer(referral, offer_id="offer-2")
    referral.mutate(referral.withdraw_offer(PROVIDER_A, "offer-1", "re-pricing"))
    referral.mutate(offer(referral, offer_id="offer-2", weekly_fee_pence=400000))
    assert [o.offer_id for o in referral.active_offers()] == ["offer-2"]


def test_withdraw_offer() -> None:
    referral = with_offer(raised(), "offer-1", PROVIDER_A)
    events = referral.withdraw_offer(PROVIDER_A, "offer-1", "cannot staff it")
    assert events == [
        NewEvent("offer-withdrawn", {"offer_id": "offer-1", "provider_id": PROVIDER_A, "reason": "cannot staff it"})]
    referral.mutate(events)
    assert referral.offers["offer-1"].status == "withdrawn" and referral.active_offers() == []
    with pytest.raises(InvalidTransition):
        referral.withdraw_offer(PROVIDER_A, "offer-1", None)
    with pytest.raises(NotFound):
        with_offer(raised(), "offer-1", PROVIDER_A).withdraw_offer(PROVIDER_B, "offer-1", None)
    with pytest.raises(NotFound):
        with_offer(raised(), "offer-1", PROVIDER_A).withdraw_offer(PROVIDER_A, "no-such-offer", None)


# --- declines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", [DeclineReason.NO_CAPACITY, DeclineReason.CANNOT_MEET_NEEDS,
                                    DeclineReason.OUTSIDE_AREA])
def test_invited_provider_declines_with_a_reason_code(reason: DeclineReason) -> None:
    referral = raised()
    events = referral.decline(PROVIDER_A, INVITED, reason)
    assert events == [NewEvent("invitation-declined", {"provider_id": PROVIDER_A, "reason": reason.value,
                                                        "note": None})]
    assert type(events[0].data["reason"]) is str
    referral.mutate(events)
    assert referral.declines[PROVIDER_A].reason == reason


def test_decline_rules() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        raised().decline(PROVIDER_A, INVITED, DeclineReason.OTHER)
    assert_violation(excinfo, "note", "required")
    assert raised().decline(PROVIDER_A, INVITED, DeclineReason.OTHER, "Ofsted visit")[0].data["note"] == "Ofsted visit"
    with pytest.raises(Forbidden):
        raised().decline(PROVIDER_A, Invitation(known=True, invited=False), DeclineReason.NO_CAPACITY)
    with pytest.raises(InvitationPending):
        raised().decline(PROVIDER_A, Invitation(known=False, invited=False), DeclineReason.NO_CAPACITY)
    # a suspended but invited provider may still say it cannot take the child
    assert raised().decline(PROVIDER_A, Invitation(known=True, invited=True, suspended=True),
                            DeclineReason.NO_CAPACITY)


def test_decline_twice_or_with_a_standing_offer_is_refused_and_a_decliner_may_offer_later() -> None:
    referral = raised()
    referral.mutate(referral.decline(PROVIDER_A, INVITED, DeclineReason.NO_CAPACITY))
    with pytest.raises(InvalidTransition):
        referral.decline(PROVIDER_A, INVITED, DeclineReason.NO_CAPACITY)
    referral.mutate(offer(referral))
    assert len(referral.active_offers()) == 1
    with pytest.raises(InvalidTransition):
        with_offer(raised(), "offer-1", PROVIDER_A).decline(PROVIDER_A, INVITED, DeclineReason.NO_CAPACITY)


# --- award ------------------------------------------------------------------------------------


def three_offers() -> Referral:
    referral = raised()
    with_offer(referral, "offer-a", PROVIDER_A, 425000)
    with_offer(referral, "offer-b", PROVIDER_B, 400000)
    with_offer(referral, "offer-c", PROVIDER_C, 390000)
    return referral.mutate(referral.withdraw_offer(PROVIDER_C, "offer-c", None))


def award(referral: Referral, **overrides: Any) -> list[NewEvent]:
    args: dict[str, Any] = {"borough": "croydon", "offer_id": "offer-b", "justification": None,
                            "shortlist": Shortlist(ranked_offer_ids=("offer-b", "offer-a")),
                            "suspended_providers": frozenset(), "now": NOW}
    args.update(overrides)
    return referral.award(**args)


def test_award_the_top_offer_needs_no_justification() -> None:
    referral = three_offers()
    events = award(referral)
    assert events == [NewEvent("placement-awarded", {
        "offer_id": "offer-b", "provider_id": PROVIDER_B, "weekly_fee_pence": 400000, "justification": None,
        "top_ranked_offer_id": "offer-b", "not_selected": [{"offer_id": "offer-a", "provider_id": PROVIDER_A}],
        "borough": "croydon", "awarded_at": "2026-06-01T09:00:00Z"})]
    referral.mutate(events)
    assert referral.status == "awarded" and referral.awarded_offer_id == "offer-b"
    assert {k: o.status for k, o in referral.offers.items()} == {
        "offer-a": "not_selected", "offer-b": "awarded", "offer-c": "withdrawn"}


def test_award_other_than_top_requires_and_records_a_justification() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        award(three_offers(), offer_id="offer-a")
    assert_violation(excinfo, "justification", "required_when_not_top")
    data = award(three_offers(), offer_id="offer-a", justification="Parental preference; tribunal order")[0].data
    assert data["offer_id"] == "offer-a" and data["top_ranked_offer_id"] == "offer-b"
    assert data["justification"] == "Parental preference; tribunal order"
    assert data["not_selected"] == [{"offer_id": "offer-b", "provider_id": PROVIDER_B}]


def test_award_waits_for_a_current_shortlist_and_names_a_standing_offer() -> None:
    with pytest.raises(ShortlistPending):
        award(three_offers(), shortlist=None)
    for offer_id, rule in [("no-such-offer", "unknown_offer"), ("offer-c", "offer_not_submitted")]:
        with pytest.raises(RuleViolation) as excinfo:
            award(three_offers(), offer_id=offer_id)
        assert_violation(excinfo, "offer_id", rule)
    with pytest.raises(RuleViolation) as excinfo:
        award(three_offers(), suspended_providers=frozenset({PROVIDER_B}))
    assert_violation(excinfo, "offer_id", "provider_suspended")
    with pytest.raises(NotFound):
        award(three_offers(), borough="lambeth")


def test_nothing_happens_after_award() -> None:
    referral = three_offers()
    referral.mutate(award(referral))
    for attempt in (lambda: award(referral), lambda: referral.withdraw("croydon", None),
                    lambda: referral.close("croydon"), lambda: referral.withdraw_offer(PROVIDER_A, "offer-a", None),
                    lambda: referral.decline(PROVIDER_C, INVITED, DeclineReason.NO_CAPACITY)):
        with pytest.raises(InvalidTransition):
            attempt()


# --- replay and erasure -------------------------------------------------------------------------


def test_replay_rebuilds_the_same_state() -> None:
    referral = Referral(REFERRAL_ID)
    history: list[NewEvent] = []
    steps = [
        lambda r: r.raise_referral("croydon", details(), NOW),
        lambda r: r.amend("croydon", {"max_travel_km": 45}, NOW),
        lambda r: offer(r, offer_id="offer-a", notes=""),
        lambda r: r.decline(PROVIDER_B, INVITED, DeclineReason.OUTSIDE_AREA),
        lambda r: r.award(borough="croydon", offer_id="offer-a", justification=None,
                          shortlist=Shortlist(("offer-a",)), suspended_providers=frozenset(), now=NOW),
    ]
    for step in steps:
        events = step(referral)
        referral.mutate(events)
        history.extend(events)
    replayed = Referral.replay(REFERRAL_ID, [(e.type, e.data) for e in history])
    assert replayed.version == referral.version == 5
    assert replayed.status == "awarded" and replayed.to_data() == referral.to_data()
    assert replayed.to_data()["max_travel_km"] == 45 and replayed.declines == referral.declines
    assert {k: v.status for k, v in replayed.offers.items()} == {"offer-a": "awarded"}


def test_unknown_event_types_are_ignored_on_replay() -> None:
    first = Referral(REFERRAL_ID).raise_referral("croydon", details(), NOW)
    replayed = Referral.replay(REFERRAL_ID, [(first[0].type, first[0].data), ("referral-annotated", {"x": 1})])
    assert replayed.status == "open" and replayed.version == 2


def test_an_erased_referral_can_still_be_amended_and_keeps_the_age_it_had() -> None:
    referral = raised()
    age = referral.to_data()["age_at_start"]
    referral.mutate(referral.erase_personal_data("croydon", NOW))
    assert referral.to_data()["child_ref"] is None and referral.to_data()["birth_date"] is None
    events = referral.amend("croydon", {"max_travel_km": 20}, NOW)
    assert events[0].data["referral"]["max_travel_km"] == 20
    assert events[0].data["referral"]["age_at_start"] == age
    assert referral.erase_personal_data("croydon", NOW) == []
