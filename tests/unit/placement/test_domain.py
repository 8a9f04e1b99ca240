"""Every rule of the Placement aggregate, and spend as the sum over days of the fee in force."""
from __future__ import annotations

from datetime import date, timedelta
from fractions import Fraction
from typing import Any

import pytest

from services.placement.domain import (
    CollapseReason,
    Contribution,
    Ending,
    EndReason,
    FeeDecision,
    NextStep,
    OffFrameworkReason,
    OutcomeRating,
    Placement,
    Progress,
    ReferralFacts,
    ShortlistEntry,
    SpendFacts,
    Stream,
    awarded_placement_id,
    fee_in_force,
    pence,
    spend,
)
from shared.errors import DomainError, InvalidTransition, NotFound, RuleViolation
from shared.vocabulary import NEEDS_INDICATORS

TODAY = date(2026, 11, 1)
NEEDS = dict.fromkeys(NEEDS_INDICATORS, 2)
FACTS = ReferralFacts(outcomes=["Attend full time", "Speak up at reviews"], needs_profile=NEEDS, primary_need="ASD",
                      placement_type="day", required_from="2026-09-01")
AWARD = {"offer_id": "o1", "provider_id": "p1", "weekly_fee_pence": 400000, "borough": "croydon",
         "justification": None}


def fold(placement: Placement, events: list[Any]) -> Placement:
    return placement.mutate(events)


def awarded() -> Placement:
    p = Placement(awarded_placement_id("r1", "o1"))
    return fold(p, p.open_from_award(AWARD, "r1", FACTS, "2026-08-01T10:00:00Z"))


def active(on: date = date(2026, 9, 1)) -> Placement:
    p = awarded()
    return fold(p, p.start(on, TODAY))


def broken(error: DomainError) -> tuple[str | None, str | None]:
    return error.field, error.rule


def shares(edu: int = 250000, care: int = 100000, health: int = 50000, icb: str | None = "QKK") -> list[Contribution]:
    return [Contribution(Stream.EDUCATION, edu), Contribution(Stream.SOCIAL_CARE, care),
            Contribution(Stream.HEALTH, health, icb)]


# --------------------------------------------------------------------------- opening

def test_an_award_opens_once_with_the_referrals_outcomes_and_needs() -> None:
    p = awarded()
    assert p.status == "awarded" and p.current_fee == 400000 and p.outcomes == FACTS.outcomes
    assert p.open_from_award(AWARD, "r1", FACTS, "2026-08-01T10:00:00Z") == []  # redelivery
    data = Placement("x").open_from_award(AWARD, "r1", FACTS, "t-2026")[0].data
    assert data["needs_profile"] == NEEDS and data["planned_start"] == "2026-09-01"
    assert "child_ref" not in data and "birth_date" not in data
    assert awarded_placement_id("r1", "o1") == awarded_placement_id("r1", "o1") != awarded_placement_id("r1", "o2")
    with pytest.raises(ValueError):
        Placement("y").open_from_award({**AWARD, "weekly_fee_pence": 0}, "r1", FACTS, "2026-08-01")


def test_an_award_for_an_unknown_referral_opens_without_outcomes() -> None:
    data = Placement("z").open_from_award(AWARD, "r9", None, "2026-08-01T00:00:00Z")[0].data
    assert data["outcomes"] == [] and data["needs_profile"] == {} and data["planned_start"] is None


def off_framework(**changes: Any) -> list[Any]:
    args: dict[str, Any] = {
        "borough": "lambeth", "provider_id": None, "provider_name": "St Anne's", "weekly_fee_pence": 500000,
        "planned_start": date(2026, 9, 1), "primary_need": "SEMH", "placement_type": "day", "outcomes": ["Return"],
        "needs_profile": NEEDS, "reason": OffFrameworkReason.TRIBUNAL_NAMED, "note": None, "referral_id": None,
        "today": TODAY, "opened_at": "2026-08-01T00:00:00Z"} | changes
    return Placement("off").open_off_framework(**args)


def test_off_framework_rules() -> None:
    data = off_framework()[0].data
    assert data["origin"] == "off_framework" and data["provider_id"] == "off-framework:St Anne's"
    assert off_framework(provider_id="p7")[0].data["provider_id"] == "p7"
    cases: list[tuple[dict[str, Any], tuple[str, str]]] = [
        ({"provider_name": None}, ("provider_name", "required")),
        ({"provider_name": "\u200b"}, ("provider_name", "required")),
        ({"reason": OffFrameworkReason.OTHER}, ("note", "required")),
        ({"weekly_fee_pence": 0}, ("weekly_fee_pence", "range")),
        ({"weekly_fee_pence": 10_000_001}, ("weekly_fee_pence", "range")),
        ({"planned_start": date(1980, 1, 1)}, ("planned_start", "plausible_date")),
        ({"planned_start": TODAY + timedelta(days=6 * 366)}, ("planned_start", "plausible_date")),
        ({"outcomes": ["a", "a"]}, ("outcomes", "unique")),
        ({"outcomes": ["a", " "]}, ("outcomes.1", "required")),
        ({"outcomes": [str(i) for i in range(21)]}, ("outcomes", "max_items")),
        ({"needs_profile": {**NEEDS, "mood": 1}}, ("needs_profile.mood", "unknown_indicator")),
        ({"needs_profile": {k: v for k, v in NEEDS.items() if k != "voice"}}, ("needs_profile.voice", "required")),
        ({"needs_profile": {**NEEDS, "voice": 4}}, ("needs_profile.voice", "range")),
    ]
    for changes, expected in cases:
        with pytest.raises(RuleViolation) as error:
            off_framework(**changes)
        assert broken(error.value) == expected, changes
    p = Placement("off").mutate(off_framework())
    with pytest.raises(InvalidTransition):
        p.open_off_framework(borough="lambeth", provider_id=None, provider_name="x", weekly_fee_pence=1,
                             planned_start=TODAY, primary_need=None, placement_type=None, outcomes=[],
                             needs_profile=NEEDS, reason=OffFrameworkReason.OTHER, note="n", referral_id=None,
                             today=TODAY, opened_at="2026-08-01T00:00:00Z")


# --------------------------------------------------------------------------- lifecycle

def test_start_rules() -> None:
    with pytest.raises(NotFound):
        Placement("nobody").start(TODAY, TODAY)
    p = awarded()
    for on, expected in ((TODAY + timedelta(days=1), ("started_on", "not_future")),
                         (date(2026, 7, 31), ("started_on", "after_award")),
                         (date(1989, 1, 1), ("started_on", "plausible_date"))):
        with pytest.raises(RuleViolation) as error:
            p.start(on, TODAY)
        assert broken(error.value) == expected
    event = p.start(date(2026, 8, 1), TODAY)[0]
    assert event.type == "placement-started" and event.data["weekly_fee_pence"] == 400000
    fold(p, [event])
    with pytest.raises(InvalidTransition) as state:
        p.start(date(2026, 8, 2), TODAY)
    assert broken(state.value) == ("status", "state")
    off = Placement("off").mutate(off_framework())
    assert off.start(date(2026, 7, 1), TODAY)  # recorded after the fact: any plausible past date


def test_end_rules() -> None:
    with pytest.raises(InvalidTransition) as not_started:
        awarded().end(TODAY, Ending.PLANNED, EndReason.OUTCOMES_MET, None, TODAY)
    assert broken(not_started.value) == ("status", "not_started")
    p = active(date(2026, 9, 1))
    end_cases: tuple[tuple[tuple[Any, ...], tuple[str, str]], ...] = (
        ((TODAY, Ending.PLANNED, EndReason.BREAKDOWN, None), ("reason", "reason_for_ending")),
        ((TODAY, Ending.UNPLANNED, EndReason.STEP_DOWN, None), ("reason", "reason_for_ending")),
        ((date(2026, 8, 31), Ending.PLANNED, EndReason.MOVED_ON, None), ("ended_on", "after_start")),
        ((TODAY, Ending.UNPLANNED, EndReason.OTHER, " "), ("note", "required")),
    )
    for args, expected in end_cases:
        with pytest.raises(RuleViolation) as error:
            ended_on, ending, reason, note = args
            p.end(ended_on, ending, reason, note, TODAY)
        assert broken(error.value) == expected, args
    event = p.end(date(2026, 10, 1), Ending.UNPLANNED, EndReason.PROVIDER_NOTICE, None, TODAY)[0]
    assert event.data | {} == {**event.data, "ending": "unplanned", "reason": "provider_notice", "days": 30}
    fold(p, [event])
    with pytest.raises(InvalidTransition):
        p.end(TODAY, Ending.PLANNED, EndReason.MOVED_ON, None, TODAY)
    for reason in EndReason:
        assert any(reason in reasons for reasons in __import__(
            "services.placement.domain", fromlist=["END_REASONS"]).END_REASONS.values())


SHORTLIST = [ShortlistEntry(1, "o1", "p1", 400000), ShortlistEntry(2, "o2", "p2", 410000),
             ShortlistEntry(3, "o3", "p3", 420000), ShortlistEntry(4, "o4", "p1", 430000)]


def test_collapse_rules() -> None:
    p = awarded()
    collapse = p.collapse
    for args, expected in (
        ((CollapseReason.OTHER, None, NextStep.REOPEN, None, None, SHORTLIST), ("note", "required")),
        ((CollapseReason.START_FAILED, None, NextStep.NONE, None, None, SHORTLIST), ("next", "one_of")),
        ((CollapseReason.START_FAILED, None, NextStep.AWARD_NEXT_OFFER, None, None, SHORTLIST),
         ("next_offer_id", "required")),
        # the provider that withdrew is out, with all its offers
        ((CollapseReason.PROVIDER_WITHDREW, None, NextStep.AWARD_NEXT_OFFER, "o4", None, SHORTLIST),
         ("next_offer_id", "on_shortlist")),
        ((CollapseReason.PROVIDER_WITHDREW, None, NextStep.AWARD_NEXT_OFFER, "o3", None, SHORTLIST),
         ("justification", "required_when_not_top")),
        ((CollapseReason.PROVIDER_WITHDREW, None, NextStep.AWARD_NEXT_OFFER, "o3", "\u200b", SHORTLIST),
         ("justification", "required_when_not_top")),
        ((CollapseReason.PROVIDER_WITHDREW, None, NextStep.REOPEN, "o2", None, SHORTLIST),
         ("next_offer_id", "only_with_award_next_offer")),
    ):
        with pytest.raises(RuleViolation) as error:
            collapse(*args)
        assert broken(error.value) == expected, args
    with pytest.raises(InvalidTransition) as unknown:
        collapse(CollapseReason.START_FAILED, None, NextStep.AWARD_NEXT_OFFER, "o2", None, None)
    assert broken(unknown.value) == ("next_offer_id", "shortlist_unknown")
    with pytest.raises(InvalidTransition) as empty:
        collapse(CollapseReason.START_FAILED, None, NextStep.AWARD_NEXT_OFFER, "o2", None, SHORTLIST[:1])
    assert broken(empty.value) == ("next", "no_remaining_offers")
    top = collapse(CollapseReason.PROVIDER_WITHDREW, None, NextStep.AWARD_NEXT_OFFER, "o2", None, SHORTLIST)[0]
    assert top.data | {} == {**top.data, "next_offer_id": "o2", "next_provider_id": "p2",
                             "top_remaining_offer_id": "o2", "justification": None, "offer_id": "o1"}
    reopen = collapse(CollapseReason.START_FAILED, "Transport fell through", NextStep.REOPEN, None, None, None)[0]
    assert reopen.data["next"] == "reopen" and reopen.data["note"] == "Transport fell through"
    fold(p, [reopen])
    assert p.status == "collapsed" and not p.live
    with pytest.raises(InvalidTransition):
        p.collapse(CollapseReason.START_FAILED, None, NextStep.REOPEN, None, None, None)
    with pytest.raises(InvalidTransition) as started:
        active().collapse(CollapseReason.START_FAILED, None, NextStep.REOPEN, None, None, None)
    assert broken(started.value) == ("status", "started")
    off = Placement("off").mutate(off_framework())
    with pytest.raises(RuleViolation) as offr:
        off.collapse(CollapseReason.START_FAILED, None, NextStep.REOPEN, None, None, None)
    assert broken(offr.value) == ("next", "off_framework")
    assert off.collapse(CollapseReason.START_FAILED, None, NextStep.NONE, None, None, None)


# --------------------------------------------------------------------------- funding

def test_funding_rules_and_decisions() -> None:
    p = active()
    fund = p.agree_funding
    start, until, due = date(2026, 9, 1), date(2027, 8, 31), date(2027, 6, 1)
    cases = [
        (([],), ("contributions", "required")),
        (([Contribution(Stream.EDUCATION, 200000), Contribution(Stream.EDUCATION, 200000)],),
         ("contributions.1.stream", "unique")),
        ((shares(health=-1),), ("contributions.2.weekly_pence", "range")),
        (([Contribution(Stream.EDUCATION, 400000, "QKK")],), ("contributions.0.icb_code", "health_only")),
        ((shares(health=50001),), ("contributions", "sum_to_fee")),
    ]
    for (contributions,), expected in cases:
        with pytest.raises(RuleViolation) as error:
            fund(contributions, start, until, due, "borough:croydon", TODAY)
        assert broken(error.value) == expected
    for dates, expected in (((start, start, start), ("agreed_until", "after_agreed_from")),
                            ((start, until, date(2027, 9, 1)), ("review_due", "within_agreement")),
                            ((start, until, date(2026, 8, 1)), ("review_due", "within_agreement")),
                            ((date(1980, 1, 1), until, due), ("agreed_from", "plausible_date"))):
        with pytest.raises(RuleViolation) as error:
            fund(shares(), *dates, "borough:croydon", TODAY)
        assert broken(error.value) == expected
    first = fund(shares(), start, until, due, "borough:croydon", TODAY)[0]
    assert first.data["decision"] == "agreed" and first.data["weekly_fee_pence"] == 400000
    assert first.data["contributions"][1] == {"stream": "health", "weekly_pence": 50000, "icb_code": "QKK"}
    fold(p, [first])
    assert p.review_due == due
    with pytest.raises(InvalidTransition) as same:
        fund(list(reversed(shares())), start, until, due, "borough:croydon", TODAY)
    assert broken(same.value) == ("contributions", "unchanged")
    extended = fund(shares(), start, date(2028, 8, 31), date(2028, 6, 1), "commissioner:region", TODAY)[0]
    assert extended.data["decision"] == "extended" and extended.data["decided_by"] == "commissioner:region"
    assert fund(shares(), start, until, date(2027, 5, 1), "borough:croydon", TODAY)[0].data["decision"] == "changed"
    assert fund(shares(200000, 150000), start, until, due, "b", TODAY)[0].data["decision"] == "changed"
    ended = active()
    fold(ended, ended.end(TODAY, Ending.PLANNED, EndReason.MOVED_ON, None, TODAY))
    with pytest.raises(InvalidTransition):
        ended.agree_funding(shares(), start, until, due, "b", TODAY)


# --------------------------------------------------------------------------- reviews

def ratings(*progress: Progress) -> list[OutcomeRating]:
    return [OutcomeRating(o, pr) for o, pr in zip(FACTS.outcomes, progress, strict=False)]


def test_review_rules() -> None:
    with pytest.raises(InvalidTransition):
        awarded().review(review_id="r", reviewed_on=TODAY, ratings=[], needs_profile=NEEDS, continues=True,
                         next_review_due=None, note=None, today=TODAY)
    p = active(date(2026, 9, 1))

    def review(**changes: Any) -> list[Any]:
        args: dict[str, Any] = {"review_id": "rv1", "reviewed_on": date(2026, 10, 15),
                                "ratings": ratings(Progress.PROGRESSING, Progress.ACHIEVED), "needs_profile": NEEDS,
                                "continues": True, "next_review_due": date(2027, 4, 15), "note": None,
                                "today": TODAY} | changes
        return p.review(**args)

    cases: list[tuple[dict[str, Any], tuple[str, str]]] = [
        ({"reviewed_on": TODAY + timedelta(days=1)}, ("reviewed_on", "not_future")),
        ({"reviewed_on": date(2026, 8, 31)}, ("reviewed_on", "after_start")),
        ({"ratings": ratings(Progress.ACHIEVED)}, ("outcomes", "every_outcome")),
        ({"ratings": [*ratings(Progress.ACHIEVED, Progress.ACHIEVED), OutcomeRating("Fly", Progress.ACHIEVED)]},
         ("outcomes.2.outcome", "known_outcome")),
        ({"ratings": [OutcomeRating(FACTS.outcomes[0], Progress.ACHIEVED)] * 2}, ("outcomes.1.outcome", "unique")),
        ({"needs_profile": {**NEEDS, "voice": -1}}, ("needs_profile.voice", "range")),
        ({"next_review_due": date(2026, 10, 15)}, ("next_review_due", "after_review")),
    ]
    for changes, expected in cases:
        with pytest.raises(RuleViolation) as error:
            review(**changes)
        assert broken(error.value) == expected, changes
    event = review(ratings=list(reversed(ratings(Progress.PROGRESSING, Progress.ACHIEVED))))[0]
    assert [r["outcome"] for r in event.data["outcomes"]] == FACTS.outcomes  # in the placement's order
    fold(p, [event])
    assert p.review_due == date(2027, 4, 15) and p.last_reviewed_on == date(2026, 10, 15)
    with pytest.raises(RuleViolation) as earlier:
        review(reviewed_on=date(2026, 10, 1))
    assert broken(earlier.value) == ("reviewed_on", "after_last_review")
    fold(p, review(reviewed_on=TODAY, next_review_due=None, continues=False))
    assert p.review_due is None


def test_review_due_is_noticed_once_per_due_date() -> None:
    p = active()
    assert p.notice_review_due(TODAY) == []  # nothing due
    fold(p, p.agree_funding(shares(), date(2026, 9, 1), date(2027, 8, 31), TODAY + timedelta(days=15), "b", TODAY))
    assert p.notice_review_due(TODAY) == []  # 15 days away
    notice = p.notice_review_due(TODAY + timedelta(days=1))
    assert notice[0].data | {} == {**notice[0].data, "overdue": False, "review_due": "2026-11-16"}
    fold(p, notice)
    assert p.notice_review_due(TODAY + timedelta(days=30)) == []  # once per due date, even overdue
    fold(p, p.agree_funding(shares(), date(2026, 9, 1), date(2027, 8, 31), date(2026, 10, 20), "b", TODAY))
    overdue = p.notice_review_due(TODAY)
    assert overdue and overdue[0].data["overdue"] is True
    assert awarded().notice_review_due(TODAY) == []  # not started: no review yet


# --------------------------------------------------------------------------- fee changes

def test_fee_change_rules() -> None:
    p = active(date(2026, 9, 1))

    def ask(**changes: Any) -> list[Any]:
        args: dict[str, Any] = {"change_id": "c1", "weekly_fee_pence": 420000, "effective_from": date(2026, 10, 1),
                                "reason": "Annual uplift", "today": TODAY} | changes
        return p.request_fee_change(**args)

    for changes, expected in (({"weekly_fee_pence": 400000}, ("weekly_fee_pence", "changed")),
                              ({"weekly_fee_pence": 0}, ("weekly_fee_pence", "range")),
                              ({"effective_from": date(2026, 8, 31)}, ("effective_from", "after_start")),
                              ({"reason": "  "}, ("reason", "required"))):
        with pytest.raises(RuleViolation) as error:
            ask(**changes)
        assert broken(error.value) == expected
    fold(p, ask())
    with pytest.raises(InvalidTransition) as pending:
        ask(change_id="c2")
    assert broken(pending.value) == ("change_id", "pending_fee_change")
    decide = p.decide_fee_change
    with pytest.raises(NotFound):
        decide(change_id="c9", decision=FeeDecision.DECLINED, weekly_fee_pence=None, note="no")
    for args, expected in (((FeeDecision.AGREED, 410000, None), ("weekly_fee_pence", "as_requested")),
                           ((FeeDecision.AGREED_IN_PART, None, "x"), ("weekly_fee_pence", "required")),
                           ((FeeDecision.AGREED_IN_PART, 400000, "x"), ("weekly_fee_pence", "between")),
                           ((FeeDecision.AGREED_IN_PART, 420000, "x"), ("weekly_fee_pence", "between")),
                           ((FeeDecision.DECLINED, 410000, "x"), ("weekly_fee_pence", "not_with_decline")),
                           ((FeeDecision.DECLINED, None, None), ("note", "required"))):
        with pytest.raises(RuleViolation) as error:
            decide(change_id="c1", decision=args[0], weekly_fee_pence=args[1], note=args[2])
        assert broken(error.value) == expected, args
    agreed = decide(change_id="c1", decision=FeeDecision.AGREED, weekly_fee_pence=None, note=None)[0]
    assert agreed.data["weekly_fee_pence"] == 420000 and agreed.data["previous_weekly_fee_pence"] == 400000
    fold(p, [agreed])
    assert p.fee_on(date(2026, 9, 30)) == 400000 and p.fee_on(date(2026, 10, 1)) == 420000 and p.current_fee == 420000
    with pytest.raises(InvalidTransition) as decided:
        decide(change_id="c1", decision=FeeDecision.DECLINED, weekly_fee_pence=None, note="no")
    assert broken(decided.value) == ("change_id", "decided")
    # declined: the fee stays; a reduction may be agreed in part too
    fold(p, ask(change_id="c2", weekly_fee_pence=380000, effective_from=date(2026, 11, 1), reason="Fewer hours"))
    fold(p, decide(change_id="c2", decision=FeeDecision.AGREED_IN_PART, weekly_fee_pence=390000, note="partly"))
    assert p.current_fee == 390000 and p.fee_on(date(2026, 10, 31)) == 420000
    fold(p, ask(change_id="c3", weekly_fee_pence=500000))
    fold(p, decide(change_id="c3", decision=FeeDecision.DECLINED, weekly_fee_pence=None, note="No evidence"))
    assert p.fee_changes["c3"]["status"] == "declined" and p.current_fee == 390000


def test_fee_in_force_takes_the_latest_agreement_effective_that_day() -> None:
    fees = [(None, 100), (date(2026, 10, 1), 120), (date(2026, 9, 15), 110), (date(2026, 10, 1), 125)]
    assert [fee_in_force(fees, d) for d in (date(2026, 9, 1), date(2026, 9, 20), date(2026, 10, 1))] == [100, 110, 125]
    assert fee_in_force([], date(2026, 1, 1)) == 0


# --------------------------------------------------------------------------- spend

def test_spend_is_the_sum_over_days_of_the_fee_in_force() -> None:
    facts = SpendFacts("p", "croydon", "p1", False, date(2026, 9, 1), date(2026, 9, 11),
                       [(None, 70000), (date(2026, 9, 6), 140000)],
                       [(date(2026, 9, 1), [Contribution(Stream.EDUCATION, 35000),
                                            Contribution(Stream.HEALTH, 35000)])])
    # 5 days at 10000 a day, then 5 at 20000 (the end day is not charged)
    assert spend(facts, date(2026, 1, 1), date(2026, 12, 31)) == {"education": Fraction(75000),
                                                                  "health": Fraction(75000)}
    assert spend(facts, date(2026, 9, 5), date(2026, 9, 6)) == {"education": Fraction(15000),
                                                                "health": Fraction(15000)}
    assert spend(facts, date(2026, 9, 11), date(2026, 9, 30)) == {}
    unfunded = SpendFacts("p", "b", "p1", True, date(2026, 9, 1), None, [(None, 10)], [])
    assert spend(unfunded, date(2026, 9, 1), date(2026, 9, 1)) == {"unfunded": Fraction(10, 7)}
    assert pence(Fraction(10, 7)) == 1 and pence(Fraction(3, 2)) == 2 and pence(Fraction(5, 7)) == 1
    not_started = SpendFacts("p", "b", "p1", False, None, None, [(None, 10)], [])
    assert spend(not_started, date(2026, 1, 1), date(2027, 1, 1)) == {}
