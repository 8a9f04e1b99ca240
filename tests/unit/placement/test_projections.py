"""The placement view folded from events: needs over time, fee history, funding balance, collapse."""
from __future__ import annotations

from services.placement.projections import fold, spend_facts
from shared.vocabulary import NEEDS_INDICATORS

NEEDS = dict.fromkeys(NEEDS_INDICATORS, 2)
OPENED = {"placement_id": "p", "origin": "award", "referral_id": "r", "offer_id": "o1", "borough": "croydon",
          "provider_id": "p1", "provider_name": None, "weekly_fee_pence": 700, "planned_start": "2026-09-01",
          "primary_need": "ASD", "placement_type": "day", "outcomes": ["A", "B"], "needs_profile": NEEDS,
          "off_framework_reason": None, "off_framework_note": None, "justification": None,
          "opened_at": "2026-08-01T10:00:00Z"}
ROUTE = {"borough": "croydon", "provider_id": "p1", "referral_id": "r"}


def test_the_view_tells_the_placements_story() -> None:
    view = fold(None, "placement-opened", OPENED)
    assert view["status"] == "awarded" and view["needs_over_time"] == [
        {"on": "2026-08-01", "source": "referral", "needs_profile": NEEDS}]
    view = fold(view, "placement-started", {**ROUTE, "started_on": "2026-09-01", "weekly_fee_pence": 700})
    view = fold(view, "funding-agreed", {**ROUTE, "decision": "agreed", "weekly_fee_pence": 700,
                                         "contributions": [{"stream": "education", "weekly_pence": 700,
                                                            "icb_code": None}],
                                         "agreed_from": "2026-09-01", "agreed_until": "2027-08-31",
                                         "review_due": "2027-03-01", "decided_by": "borough:croydon"})
    assert view["funding_balanced"] and view["review_due"] == "2027-03-01"
    view = fold(view, "placement-reviewed", {**ROUTE, "review_id": "rv", "reviewed_on": "2027-02-20", "note": None,
                                             "outcomes": [{"outcome": "A", "progress": "achieved", "note": "yes"},
                                                          {"outcome": "B", "progress": "progressing", "note": None}],
                                             "needs_profile": {**NEEDS, "voice": 0, "identity": 3},
                                             "continues": True, "next_review_due": None})
    assert [o["progress"] for o in view["outcomes"]] == ["achieved", "progressing"]
    assert view["outcomes"][0]["rated_on"] == "2027-02-20" and view["review_due"] is None
    assert view["distance_travelled"]["voice"] == -2 and view["distance_travelled"]["identity"] == 1
    assert len(view["needs_over_time"]) == 2
    view = fold(view, "fee-change-requested", {**ROUTE, "change_id": "c", "weekly_fee_pence": 1400,
                                               "previous_weekly_fee_pence": 700, "effective_from": "2026-09-08",
                                               "reason": "uplift"})
    view = fold(view, "fee-change-decided", {**ROUTE, "change_id": "c", "decision": "agreed", "weekly_fee_pence": 1400,
                                             "effective_from": "2026-09-08", "note": None})
    assert view["weekly_fee_pence"] == 1400 and not view["funding_balanced"]
    assert view["fee_changes"][0]["status"] == "agreed" and len(view["fee_history"]) == 2
    facts = spend_facts(view)
    assert facts.started_on is not None and facts.fees[1][1] == 1400 and facts.fundings[0][1][0].weekly_pence == 700
    view = fold(view, "placement-ended", {**ROUTE, "ended_on": "2027-03-01", "ending": "planned",
                                          "reason": "outcomes_met", "note": None, "days": 181})
    assert view["status"] == "ended" and view["ending"]["days"] == 181
    assert fold(view, "something-new", {}) == view


def test_a_collapsed_award() -> None:
    view = fold(fold(None, "placement-opened", OPENED), "award-collapsed", {
        **ROUTE, "offer_id": "o1", "reason": "provider_withdrew", "note": None, "next": "reopen",
        "next_offer_id": None, "next_provider_id": None, "top_remaining_offer_id": None, "justification": None})
    assert view["status"] == "collapsed" and view["collapse"]["next"] == "reopen"
