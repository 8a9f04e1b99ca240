"""Unit tests of the Referral aggregate: every transition and every rule, no I/O."""
from __future__ import annotations

import copy
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from services.referral.domain import (
    Invitation,
    InvitationPending,
    Location,
    Referral,
    ReferralDetails,
    Shortlist,
    ShortlistPending,
    age_in_years,
    district_of,
    format_instant,
    format_score,
    to_score,
)
from shared.aggregate import NewEvent
from shared.errors import Forbidden, InvalidTransition, NotFound, RuleViolation

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)
REFERRAL_ID = "5b0e7a52-2a4c-4e7e-9a57-0a0b8f7b1c11"
PROVIDER_A = "0d1f6c9e-6f0a-4f1e-8a55-0f1d9b7e2a01"
PROVIDER_B = "0d1f6c9e-6f0a-4f1e-8a55-0f1d9b7e2a02"
PROVIDER_C = "0d1f6c9e-6f0a-4f1e-8a55-0f1d9b7e2a03"
INVITED = Invitation(known=True, invited=True)


def payload(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "child_ref": "CR-2026-0042",
        "birth_date": "2014-05-02",
        "gender": "male",
        "primary_need": "ASD",
        "secondary_needs": ["SLCN"],
        "placement_type": "day",
        "required_from": "2026-09-01",
        "location": {"postcode": "CR0 1NX", "lat": 51.372, "lon": -0.099},
        "max_travel_km": 30,
        "offer_deadline": "2026-07-01T17:00:00Z",
        "preferred_provider_id": None,
        "needs_profile": {
            "physical_health": 0,
            "emotional_health": 2,
            "relationships": 1,
            "risk_taking": 0,
            "learning_disability": 2,
            "educational_progress": 2,
            "self_regulation": 3,
            "community_engagement": 1,
            "self_care": 1,
            "goals_and_aspirations": 1,
            "voice": 2,
            "identity": 1,
        },
        "outcomes": ["Attend school full time by spring term", "Use a communication aid at home"],
    }
    body.update(overrides)
    return body


def raised(borough: str = "croydon", **overrides: Any) -> Referral:
    referral = Referral(REFERRAL_ID)
    return referral.mutate(referral.raise_referral(borough, payload(**overrides), NOW))


def with_offer(
    referral: Referral, offer_id: str, provider_id: str, fee: int = 425000, at: datetime = NOW
) -> Referral:
    events = referral.submit_offer(
        offer_id=offer_id,
        provider_id=provider_id,
        invitation=INVITED,
        weekly_fee_pence=fee,
        start_date="2026-09-01",
        notes="Place in our ASD unit",
        now=at,
    )
    return referral.mutate(events)


def offer(referral: Referral, **overrides: Any) -> list[NewEvent]:
    args: dict[str, Any] = {
        "offer_id": "offer-1",
        "provider_id": PROVIDER_A,
        "invitation": INVITED,
        "weekly_fee_pence": 425000,
        "start_date": "2026-09-01",
        "notes": "Place in our ASD unit",
        "now": NOW,
    }
    args.update(overrides)
    return referral.submit_offer(**args)


def assert_violation(excinfo: pytest.ExceptionInfo[RuleViolation], field: str, rule: str | None = None) -> None:
    assert excinfo.value.status == 422
    assert excinfo.value.field == field
    if rule is not None:
        assert excinfo.value.rule == rule


# --- helpers ----------------------------------------------------------------------------------


def test_age_in_years_counts_birthdays_on_the_day() -> None:
    assert age_in_years(date(2014, 5, 2), date(2026, 5, 1)) == 11
    assert age_in_years(date(2014, 5, 2), date(2026, 5, 2)) == 12
    assert age_in_years(date(2012, 2, 29), date(2026, 2, 28)) == 13
    assert age_in_years(date(2012, 2, 29), date(2026, 3, 1)) == 14


def test_district_is_the_outward_code() -> None:
    assert district_of("CR0 1NX") == "CR0"
    assert district_of("sw1a1aa") == "SW1A"
    assert district_of("E1 6AN") == "E1"
    with pytest.raises(RuleViolation):
        district_of("NOT A POSTCODE")


def test_scores_round_half_up_to_two_places_as_strings() -> None:
    assert to_score("88.005") == Decimal("88.01")
    assert to_score("88.004") == Decimal("88.00")
    assert format_score(80) == "80.00"
    assert format_score(Decimal("2.675")) == "2.68"


def test_instants_are_utc_with_z() -> None:
    moment = datetime(2026, 7, 1, 18, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert format_instant(moment) == "2026-07-01T17:00:00Z"


# --- raise ------------------------------------------------------------------------------------


def test_raise_emits_referral_raised_with_the_full_referral() -> None:
    referral = Referral(REFERRAL_ID)
    events = referral.raise_referral("croydon", payload(), NOW)
    assert [e.type for e in events] == ["referral-raised"]
    data = events[0].data
    assert data == {
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
        "needs_profile": payload()["needs_profile"],
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
    body = payload()
    for name in ("location", "max_travel_km", "preferred_provider_id", "secondary_needs"):
        del body[name]
    events = Referral(REFERRAL_ID).raise_referral("croydon", body, NOW)
    data = events[0].data
    assert data["location"] is None and data["max_travel_km"] is None
    assert data["secondary_needs"] == [] and data["preferred_provider_id"] is None


def test_raise_normalises_postcode_and_accepts_location_without_coordinates() -> None:
    events = Referral(REFERRAL_ID).raise_referral("croydon", payload(location={"postcode": "cr01nx"}), NOW)
    assert events[0].data["location"] == {"postcode": "CR0 1NX", "lat": None, "lon": None, "district": "CR0"}


def test_raise_requires_a_borough() -> None:
    with pytest.raises(Forbidden):
        Referral(REFERRAL_ID).raise_referral("", payload(), NOW)


def test_a_referral_is_raised_once() -> None:
    with pytest.raises(InvalidTransition):
        raised().raise_referral("croydon", payload(), NOW)


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        ({"child_ref": None}, "child_ref", "required"),
        ({"child_ref": "Jane Smith"}, "child_ref", "pseudonymous"),
        ({"child_ref": "9434765919"}, "child_ref", "pseudonymous"),
        ({"child_ref": 42}, "child_ref", "type"),
        ({"birth_date": "02/05/2014"}, "birth_date", "format"),
        ({"birth_date": "2014-02-30"}, "birth_date", "format"),
        ({"birth_date": "2027-01-01"}, "birth_date", "not_in_future"),
        ({"birth_date": "1990-01-01"}, "birth_date", "age_range"),
        ({"gender": "robot"}, "gender", "one_of"),
        ({"primary_need": "XYZ"}, "primary_need", "need_code"),
        ({"primary_need": None}, "primary_need", "required"),
        ({"secondary_needs": ["SLCN", "BAD"]}, "secondary_needs.1", "need_code"),
        ({"secondary_needs": ["SLCN", "SLCN"]}, "secondary_needs", "unique"),
        ({"secondary_needs": ["ASD"]}, "secondary_needs", "not_primary"),
        ({"secondary_needs": "SLCN"}, "secondary_needs", "type"),
        ({"placement_type": "boarding"}, "placement_type", "one_of"),
        ({"required_from": "2026-05-01"}, "required_from", "not_in_past"),
        ({"location": {"postcode": "NOWHERE"}}, "location.postcode", "format"),
        ({"location": {"lat": 51.3, "lon": -0.1}}, "location.postcode", "required"),
        ({"location": {"postcode": "CR0 1NX", "lat": 51.3}}, "location.lon", "required"),
        ({"location": {"postcode": "CR0 1NX", "lat": 91, "lon": 0}}, "location.lat", "range"),
        ({"location": {"postcode": "CR0 1NX", "lat": 51, "lon": 200}}, "location.lon", "range"),
        ({"location": {"postcode": "CR0 1NX", "street": "High St"}}, "location.street", "unknown_field"),
        ({"location": "CR0 1NX"}, "location", "type"),
        ({"max_travel_km": 0}, "max_travel_km", "range"),
        ({"max_travel_km": 501}, "max_travel_km", "range"),
        ({"max_travel_km": "far"}, "max_travel_km", "type"),
        ({"max_travel_km": True}, "max_travel_km", "type"),
        ({"outcomes": []}, "outcomes", "not_empty"),
        ({"outcomes": ["ok", ""]}, "outcomes.1", "not_empty"),
        ({"outcomes": ["x"] * 21}, "outcomes", "max_items"),
        ({"outcomes": "be happy"}, "outcomes", "type"),
        ({"offer_deadline": "2026-07-01T17:00:00"}, "offer_deadline", "timezone"),
        ({"offer_deadline": "soon"}, "offer_deadline", "format"),
        ({"offer_deadline": "2026-05-01T17:00:00Z"}, "offer_deadline", "in_future"),
        ({"offer_deadline": "2026-09-02T17:00:00Z"}, "offer_deadline", "before_required_from"),
        ({"preferred_provider_id": "riverside"}, "preferred_provider_id", "format"),
        ({"nickname": "Jo"}, "nickname", "unknown_field"),
    ],
)
def test_raise_rejects_invalid_content_naming_the_field(overrides: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(RuleViolation) as excinfo:
        Referral(REFERRAL_ID).raise_referral("croydon", payload(**overrides), NOW)
    assert_violation(excinfo, field, rule)


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        (lambda p: p.pop("voice"), "needs_profile.voice", "required"),
        (lambda p: p.update(voice=4), "needs_profile.voice", "range"),
        (lambda p: p.update(voice=-1), "needs_profile.voice", "range"),
        (lambda p: p.update(voice="high"), "needs_profile.voice", "type"),
        (lambda p: p.update(voice=1.5), "needs_profile.voice", "type"),
        (lambda p: p.update(mood=1), "needs_profile.mood", "unknown_indicator"),
    ],
)
def test_needs_profile_has_exactly_twelve_indicators_each_0_to_3(change: Any, field: str, rule: str) -> None:
    profile = copy.deepcopy(payload()["needs_profile"])
    change(profile)
    with pytest.raises(RuleViolation) as excinfo:
        Referral(REFERRAL_ID).raise_referral("croydon", payload(needs_profile=profile), NOW)
    assert_violation(excinfo, field, rule)


def test_preferred_provider_is_kept() -> None:
    referral = raised(preferred_provider_id=PROVIDER_B)
    assert referral.to_data()["preferred_provider_id"] == PROVIDER_B


# --- amend ------------------------------------------------------------------------------------


def test_amend_records_only_the_changes_and_the_full_referral() -> None:
    referral = raised()
    events = referral.amend("croydon", {"max_travel_km": 40, "gender": "male"}, NOW)
    assert [e.type for e in events] == ["referral-amended"]
    assert events[0].data["changes"] == {"max_travel_km": 40}
    assert events[0].data["referral"]["max_travel_km"] == 40
    assert events[0].data["referral"]["borough"] == "croydon"
    referral.mutate(events)
    assert referral.to_data()["max_travel_km"] == 40 and referral.status == "open"


def test_amend_of_dates_carries_the_new_age_at_start() -> None:
    referral = raised()
    events = referral.amend("croydon", {"required_from": "2027-09-01"}, NOW)
    assert events[0].data["changes"] == {"required_from": "2027-09-01", "age_at_start": 13}


def test_amend_that_changes_nothing_is_refused() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        raised().amend("croydon", {"gender": "male"}, NOW)
    assert_violation(excinfo, "body", "no_changes")
    with pytest.raises(RuleViolation):
        raised().amend("croydon", {}, NOW)


def test_amend_validates_the_result() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        raised().amend("croydon", {"primary_need": "SLCN"}, NOW)  # now equals a secondary need
    assert_violation(excinfo, "secondary_needs", "not_primary")
    with pytest.raises(RuleViolation) as excinfo:
        raised().amend("croydon", {"child_ref": None}, NOW)
    assert_violation(excinfo, "child_ref", "required")


def test_amend_by_another_borough_is_not_found() -> None:
    with pytest.raises(NotFound):
        raised().amend("lambeth", {"max_travel_km": 40}, NOW)


def test_amend_after_withdrawal_is_invalid() -> None:
    referral = raised()
    referral.mutate(referral.withdraw("croydon", "no longer needed"))
    with pytest.raises(InvalidTransition):
        referral.amend("croydon", {"max_travel_km": 40}, NOW)


# --- withdraw / close -------------------------------------------------------------------------


def test_withdraw() -> None:
    referral = raised()
    events = referral.withdraw("croydon", "  Family moved away ")
    assert events == [NewEvent("referral-withdrawn", {"reason": "Family moved away"})]
    referral.mutate(events)
    assert referral.status == "withdrawn"
    with pytest.raises(InvalidTransition):
        referral.withdraw("croydon", None)


def test_withdraw_by_another_borough_is_not_found() -> None:
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
    deadline = datetime(2026, 7, 1, 17, 0, tzinfo=timezone.utc)
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
    deadline = datetime(2026, 7, 1, 17, 0, tzinfo=timezone.utc)
    assert not referral.is_due_for_closing(deadline)
    with pytest.raises(InvalidTransition):
        referral.close_unfilled(deadline)
    referral.mutate(referral.withdraw_offer(PROVIDER_A, "offer-1", None))
    assert referral.is_due_for_closing(deadline)


# --- offers -----------------------------------------------------------------------------------


def test_invited_provider_offers() -> None:
    referral = raised()
    events = offer(referral)
    assert events == [
        NewEvent(
            "offer-submitted",
            {
                "offer_id": "offer-1",
                "provider_id": PROVIDER_A,
                "weekly_fee_pence": 425000,
                "start_date": "2026-09-01",
                "notes": "Place in our ASD unit",
                "submitted_at": "2026-06-01T09:00:00Z",
            },
        )
    ]
    referral.mutate(events)
    assert [o.offer_id for o in referral.active_offers()] == ["offer-1"]


def test_offer_from_provider_not_invited_is_forbidden() -> None:
    with pytest.raises(Forbidden) as excinfo:
        offer(raised(), invitation=Invitation(known=True, invited=False))
    assert excinfo.value.status == 403 and excinfo.value.rule == "not_invited"


def test_offer_from_suspended_provider_is_forbidden_even_if_invited() -> None:
    with pytest.raises(Forbidden) as excinfo:
        offer(raised(), invitation=Invitation(known=True, invited=True, suspended=True))
    assert excinfo.value.rule == "provider_suspended"


def test_offer_before_the_invitation_is_known_must_be_retried() -> None:
    with pytest.raises(InvitationPending) as excinfo:
        offer(raised(), invitation=Invitation(known=False, invited=False))
    assert excinfo.value.status == 409 and excinfo.value.retry_after > 0


def test_offer_on_unknown_referral_is_not_found() -> None:
    with pytest.raises(NotFound):
        offer(Referral(REFERRAL_ID))


def test_offer_after_the_deadline_is_refused() -> None:
    with pytest.raises(InvalidTransition) as excinfo:
        offer(raised(), now=datetime(2026, 7, 1, 17, 0, tzinfo=timezone.utc))
    assert excinfo.value.rule == "deadline_passed"


def test_offer_on_a_referral_no_longer_open_is_refused() -> None:
    referral = raised()
    referral.mutate(referral.close("croydon"))
    with pytest.raises(InvalidTransition):
        offer(referral)


def test_one_standing_offer_per_provider() -> None:
    referral = with_offer(raised(), "offer-1", PROVIDER_A)
    with pytest.raises(InvalidTransition):
        offer(referral, offer_id="offer-2")
    referral.mutate(referral.withdraw_offer(PROVIDER_A, "offer-1", "re-pricing"))
    referral.mutate(offer(referral, offer_id="offer-2", weekly_fee_pence=400000))
    assert [o.offer_id for o in referral.active_offers()] == ["offer-2"]


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        ({"weekly_fee_pence": None}, "weekly_fee_pence", "required"),
        ({"weekly_fee_pence": 0}, "weekly_fee_pence", "range"),
        ({"weekly_fee_pence": -5}, "weekly_fee_pence", "range"),
        ({"weekly_fee_pence": 10_000_001}, "weekly_fee_pence", "range"),
        ({"weekly_fee_pence": 4250.5}, "weekly_fee_pence", "type"),
        ({"weekly_fee_pence": "425000"}, "weekly_fee_pence", "type"),
        ({"start_date": None}, "start_date", "required"),
        ({"start_date": "next week"}, "start_date", "format"),
        ({"start_date": "2026-05-31"}, "start_date", "not_in_past"),
        ({"notes": 12}, "notes", "type"),
        ({"notes": "x" * 2001}, "notes", "max_length"),
    ],
)
def test_offer_content_is_validated(overrides: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(RuleViolation) as excinfo:
        offer(raised(), **overrides)
    assert_violation(excinfo, field, rule)


def test_offer_notes_are_optional() -> None:
    assert offer(raised(), notes=None)[0].data["notes"] == ""


def test_withdraw_offer() -> None:
    referral = with_offer(raised(), "offer-1", PROVIDER_A)
    events = referral.withdraw_offer(PROVIDER_A, "offer-1", " cannot staff it ")
    assert events == [
        NewEvent("offer-withdrawn", {"offer_id": "offer-1", "provider_id": PROVIDER_A, "reason": "cannot staff it"})
    ]
    referral.mutate(events)
    assert referral.offers["offer-1"].status == "withdrawn" and referral.active_offers() == []
    with pytest.raises(InvalidTransition):
        referral.withdraw_offer(PROVIDER_A, "offer-1", None)


def test_withdraw_another_providers_offer_is_not_found() -> None:
    referral = with_offer(raised(), "offer-1", PROVIDER_A)
    with pytest.raises(NotFound):
        referral.withdraw_offer(PROVIDER_B, "offer-1", None)
    with pytest.raises(NotFound):
        referral.withdraw_offer(PROVIDER_A, "no-such-offer", None)


# --- declines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["no_capacity", "cannot_meet_needs", "outside_area"])
def test_invited_provider_declines_with_a_reason_code(reason: str) -> None:
    referral = raised()
    events = referral.decline(PROVIDER_A, INVITED, reason)
    assert events == [NewEvent("invitation-declined", {"provider_id": PROVIDER_A, "reason": reason, "note": None})]
    referral.mutate(events)
    assert referral.declines[PROVIDER_A].reason == reason


def test_decline_other_needs_a_note() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        raised().decline(PROVIDER_A, INVITED, "other")
    assert_violation(excinfo, "note", "required")
    events = raised().decline(PROVIDER_A, INVITED, "other", "Ofsted monitoring visit pending")
    assert events[0].data["note"] == "Ofsted monitoring visit pending"


def test_decline_rules() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        raised().decline(PROVIDER_A, INVITED, "too_expensive")
    assert_violation(excinfo, "reason", "one_of")
    with pytest.raises(RuleViolation) as excinfo:
        raised().decline(PROVIDER_A, INVITED, None)
    assert_violation(excinfo, "reason", "required")
    with pytest.raises(Forbidden):
        raised().decline(PROVIDER_A, Invitation(known=True, invited=False), "no_capacity")
    with pytest.raises(InvitationPending):
        raised().decline(PROVIDER_A, Invitation(known=False, invited=False), "no_capacity")
    # a suspended but invited provider may still say it cannot take the child
    assert raised().decline(PROVIDER_A, Invitation(known=True, invited=True, suspended=True), "no_capacity")


def test_decline_twice_or_with_a_standing_offer_is_refused() -> None:
    referral = raised()
    referral.mutate(referral.decline(PROVIDER_A, INVITED, "no_capacity"))
    with pytest.raises(InvalidTransition):
        referral.decline(PROVIDER_A, INVITED, "no_capacity")
    referral = with_offer(raised(), "offer-1", PROVIDER_A)
    with pytest.raises(InvalidTransition):
        referral.decline(PROVIDER_A, INVITED, "no_capacity")


def test_a_provider_that_declined_may_still_offer_later() -> None:
    referral = raised()
    referral.mutate(referral.decline(PROVIDER_A, INVITED, "no_capacity"))
    referral.mutate(offer(referral))
    assert len(referral.active_offers()) == 1


# --- award ------------------------------------------------------------------------------------


def three_offers() -> Referral:
    referral = raised()
    with_offer(referral, "offer-a", PROVIDER_A, 425000)
    with_offer(referral, "offer-b", PROVIDER_B, 400000)
    with_offer(referral, "offer-c", PROVIDER_C, 390000)
    referral.mutate(referral.withdraw_offer(PROVIDER_C, "offer-c", None))
    return referral


SHORTLIST = Shortlist(ranked_offer_ids=("offer-b", "offer-a"))


def award(referral: Referral, **overrides: Any) -> list[NewEvent]:
    args: dict[str, Any] = {
        "borough": "croydon",
        "offer_id": "offer-b",
        "justification": None,
        "shortlist": SHORTLIST,
        "suspended_providers": frozenset(),
        "now": NOW,
    }
    args.update(overrides)
    return referral.award(**args)


def test_award_the_top_offer_needs_no_justification() -> None:
    referral = three_offers()
    events = award(referral)
    assert events == [
        NewEvent(
            "placement-awarded",
            {
                "offer_id": "offer-b",
                "provider_id": PROVIDER_B,
                "weekly_fee_pence": 400000,
                "justification": None,
                "top_ranked_offer_id": "offer-b",
                "not_selected": [{"offer_id": "offer-a", "provider_id": PROVIDER_A}],
                "borough": "croydon",
                "awarded_at": "2026-06-01T09:00:00Z",
            },
        )
    ]
    referral.mutate(events)
    assert referral.status == "awarded" and referral.awarded_offer_id == "offer-b"
    assert referral.offers["offer-b"].status == "awarded"
    assert referral.offers["offer-a"].status == "not_selected"
    assert referral.offers["offer-c"].status == "withdrawn"


def test_award_other_than_top_requires_a_justification() -> None:
    for missing in (None, "", "   "):
        with pytest.raises(RuleViolation) as excinfo:
            award(three_offers(), offer_id="offer-a", justification=missing)
        assert_violation(excinfo, "justification", "required_when_not_top")


def test_award_other_than_top_records_the_justification() -> None:
    events = award(three_offers(), offer_id="offer-a", justification=" Parental preference; tribunal order ")
    data = events[0].data
    assert data["offer_id"] == "offer-a" and data["top_ranked_offer_id"] == "offer-b"
    assert data["justification"] == "Parental preference; tribunal order"
    assert data["not_selected"] == [{"offer_id": "offer-b", "provider_id": PROVIDER_B}]


def test_award_an_excluded_offer_needs_a_justification() -> None:
    shortlist = Shortlist(ranked_offer_ids=("offer-b",), excluded_offer_ids=frozenset({"offer-a"}))
    with pytest.raises(RuleViolation):
        award(three_offers(), offer_id="offer-a", shortlist=shortlist)
    assert award(three_offers(), offer_id="offer-a", shortlist=shortlist, justification="Tribunal order")


def test_award_waits_for_a_shortlist_that_ranks_the_current_offers() -> None:
    stale = [
        None,
        Shortlist(ranked_offer_ids=("offer-b",)),  # offer-a not ranked yet
        Shortlist(ranked_offer_ids=("offer-c", "offer-b", "offer-a")),  # offer-c withdrawn since
    ]
    for shortlist in stale:
        with pytest.raises(ShortlistPending) as excinfo:
            award(three_offers(), shortlist=shortlist, justification="Parental preference")
        assert excinfo.value.status == 409 and excinfo.value.retry_after > 0


@pytest.mark.parametrize(
    ("offer_id", "rule"),
    [("no-such-offer", "unknown_offer"), ("offer-c", "offer_not_submitted"), (None, "required")],
)
def test_award_must_name_a_standing_offer(offer_id: str | None, rule: str) -> None:
    with pytest.raises(RuleViolation) as excinfo:
        award(three_offers(), offer_id=offer_id)
    assert_violation(excinfo, "offer_id", rule)


def test_award_to_a_suspended_provider_is_refused() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        award(three_offers(), suspended_providers=frozenset({PROVIDER_B}))
    assert_violation(excinfo, "offer_id", "provider_suspended")


def test_award_by_another_borough_is_not_found() -> None:
    with pytest.raises(NotFound):
        award(three_offers(), borough="lambeth")


def test_nothing_happens_after_award() -> None:
    referral = three_offers()
    referral.mutate(award(referral))
    with pytest.raises(InvalidTransition):
        award(referral)
    with pytest.raises(InvalidTransition):
        referral.withdraw("croydon", None)
    with pytest.raises(InvalidTransition):
        referral.close("croydon")
    with pytest.raises(InvalidTransition):
        referral.withdraw_offer(PROVIDER_A, "offer-a", None)
    with pytest.raises(InvalidTransition):
        referral.decline(PROVIDER_C, INVITED, "no_capacity")


# --- replay -----------------------------------------------------------------------------------


def test_replay_rebuilds_the_same_state() -> None:
    referral = raised()
    history: list[NewEvent] = []
    steps = [
        lambda r: r.amend("croydon", {"max_travel_km": 45}, NOW),
        lambda r: r.submit_offer(
            offer_id="offer-a", provider_id=PROVIDER_A, invitation=INVITED, weekly_fee_pence=425000,
            start_date="2026-09-01", notes="", now=NOW,
        ),
        lambda r: r.decline(PROVIDER_B, INVITED, "outside_area"),
        lambda r: r.award(
            borough="croydon", offer_id="offer-a", justification=None,
            shortlist=Shortlist(("offer-a",)), suspended_providers=frozenset(), now=NOW,
        ),
    ]
    first = Referral(REFERRAL_ID).raise_referral("croydon", payload(), NOW)
    history.extend(first)
    for step in steps:
        events = step(referral)
        referral.mutate(events)
        history.extend(events)
    replayed = Referral.replay(REFERRAL_ID, [(e.type, e.data) for e in history])
    assert replayed.version == referral.version == 5
    assert replayed.status == "awarded" and replayed.to_data() == referral.to_data()
    assert replayed.to_data()["max_travel_km"] == 45
    assert replayed.declines == referral.declines
    assert {k: v.status for k, v in replayed.offers.items()} == {"offer-a": "awarded"}


def test_unknown_event_types_are_ignored_on_replay() -> None:
    first = Referral(REFERRAL_ID).raise_referral("croydon", payload(), NOW)
    replayed = Referral.replay(REFERRAL_ID, [(first[0].type, first[0].data), ("referral-annotated", {"x": 1})])
    assert replayed.status == "open" and replayed.version == 2


def test_details_round_trip_through_event_data() -> None:
    details = ReferralDetails.parse(payload())
    assert ReferralDetails.from_data(details.to_data("croydon")) == details
    assert Location.parse(None) is None


def test_an_erased_referral_can_still_be_amended_and_keeps_the_age_it_had() -> None:
    referral = Referral(REFERRAL_ID)
    referral.mutate(referral.raise_referral("croydon", payload(), NOW))
    age = referral.to_data()["age_at_start"]
    referral.mutate(referral.erase_personal_data("croydon", NOW))
    assert referral.to_data()["child_ref"] is None and referral.to_data()["birth_date"] is None
    events = referral.amend("croydon", {"max_travel_km": 20}, NOW)
    assert events[0].data["referral"]["max_travel_km"] == 20
    assert events[0].data["referral"]["age_at_start"] == age
    assert referral.erase_personal_data("croydon", NOW) == []
