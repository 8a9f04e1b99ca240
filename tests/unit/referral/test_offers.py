"""Offer, decline and award rules, as pure functions."""
from __future__ import annotations

from datetime import date

import pytest

from services.referral.offers import (
    Offer,
    Shortlist,
    ShortlistPending,
    check_decline,
    check_start,
    chosen_offer,
    top_of,
)
from shared.errors import RuleViolation
from shared.vocabulary import DeclineReason

from .factories import NOW, PROVIDER_A, PROVIDER_B


def standing(offer_id: str, provider_id: str, status: str = "submitted") -> Offer:
    return Offer(offer_id, provider_id, 425000, date(2026, 9, 1), "", "2026-06-01T09:00:00Z", status)  # type: ignore[arg-type]


def test_a_start_is_not_in_the_past_nor_more_than_five_years_ahead() -> None:
    check_start(date(2026, 6, 1), NOW)
    check_start(date(2031, 6, 1), NOW)
    for start, rule in [(date(2026, 5, 31), "not_in_past"), (date(2031, 6, 2), "range")]:
        with pytest.raises(RuleViolation) as excinfo:
            check_start(start, NOW)
        assert (excinfo.value.field, excinfo.value.rule) == ("start_date", rule)


def test_a_decline_for_another_reason_says_why() -> None:
    check_decline(DeclineReason.NO_CAPACITY, None)
    check_decline(DeclineReason.OTHER, "Ofsted visit pending")
    with pytest.raises(RuleViolation) as excinfo:
        check_decline(DeclineReason.OTHER, None)
    assert (excinfo.value.field, excinfo.value.rule) == ("note", "required")


@pytest.mark.parametrize(("offer_id", "suspended", "rule"), [
    ("offer-x", frozenset(), "unknown_offer"),
    ("offer-c", frozenset(), "offer_not_submitted"),
    ("offer-a", frozenset({PROVIDER_A}), "provider_suspended"),
])
def test_an_award_names_a_standing_offer_of_a_provider_in_good_standing(
        offer_id: str, suspended: frozenset[str], rule: str) -> None:
    offers = {"offer-a": standing("offer-a", PROVIDER_A), "offer-c": standing("offer-c", PROVIDER_B, "withdrawn")}
    with pytest.raises(RuleViolation) as excinfo:
        chosen_offer(offers, offer_id, suspended)
    assert (excinfo.value.field, excinfo.value.rule) == ("offer_id", rule)
    assert chosen_offer(offers, "offer-a", frozenset()) is offers["offer-a"]


def test_the_top_needs_no_justification_anything_else_does() -> None:
    a, b = standing("offer-a", PROVIDER_A), standing("offer-b", PROVIDER_B)
    shortlist = Shortlist(("offer-b", "offer-a"))
    assert top_of(shortlist, [a, b], b, None) == "offer-b"
    assert top_of(shortlist, [a, b], a, "Parental preference") == "offer-b"
    with pytest.raises(RuleViolation) as excinfo:
        top_of(shortlist, [a, b], a, None)
    assert (excinfo.value.field, excinfo.value.rule) == ("justification", "required_when_not_top")


def test_a_shortlist_counts_only_when_it_ranks_exactly_the_standing_offers() -> None:
    a, b = standing("offer-a", PROVIDER_A), standing("offer-b", PROVIDER_B)
    assert Shortlist(("offer-b",), frozenset({"offer-a"})).is_current_for(["offer-a", "offer-b"])
    for stale in (None, Shortlist(("offer-b",)), Shortlist(("offer-c", "offer-b", "offer-a"))):
        with pytest.raises(ShortlistPending) as excinfo:
            top_of(stale, [a, b], a, "Parental preference")
        assert excinfo.value.status == 409 and excinfo.value.retry_after > 0
