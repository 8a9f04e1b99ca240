"""ReferralMatch decisions, notification requests and audit records."""
from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from services.matching.domain import (
    ReferralMatch,
    award_notifications,
    closed_unfilled_notification,
    decision_record,
    match_notifications,
    notification_id,
    shortlist_notifications,
    suspension_notification,
)
from services.matching.eligibility import ProviderFacts, ReferralFacts
from services.matching.ranking import Offer, Policy
from shared.vocabulary import Location

REFERRAL = ReferralFacts(
    referral_id="r-1", borough="croydon", age_at_start=12, gender="male", primary_need="ASD",
    placement_type="day", required_from="2026-09-01",
    location=Location(lat=51.372, lon=-0.099, postcode="CR0 1NX"),
    max_travel_km=Decimal(30), offer_deadline="2026-07-01T17:00:00Z",
)


def provider(pid: str, **changes: object) -> ProviderFacts:
    base = ProviderFacts(provider_id=pid, status="approved", lots=("ASD",), age_min=5, age_max=19,
                         genders=("male", "female"), placement_types=("day",), capacity=2,
                         location=Location(lat=51.501, lon=-0.115), contact_email=f"{pid}@x.example",
                         quality_score=Decimal("80.00"))
    return replace(base, **changes)


def test_match_invites_eligible_providers_with_rule_results() -> None:
    directory = {"p2": provider("p2"), "p1": provider("p1"), "p3": provider("p3", lots=("SEMH",))}
    events, results = ReferralMatch("r-1").match(REFERRAL, directory, "referral-raised")
    assert [e.type for e in events] == ["referral-matched"]
    data = events[0].data
    assert data["invited"] == ["p1", "p2"] and data["newly_invited"] == ["p1", "p2"]
    assert data["referral_id"] == "r-1" and data["borough"] == "croydon" and data["trigger"] == "referral-raised"
    assert [r["provider_id"] for r in data["results"]] == ["p1", "p2", "p3"]
    assert data["results"][2] == {"provider_id": "p3", "eligible": False, "rules": {
        "status": True, "lot": False, "age": True, "gender": True, "placement_type": True,
        "capacity": True, "distance": True, "borough": True}}


def test_match_with_nobody_eligible_still_decides_and_notifies_borough() -> None:
    match = ReferralMatch("r-1")
    events, _ = match.match(REFERRAL, {"p3": provider("p3", capacity=0)}, "referral-raised")
    assert events[0].data["invited"] == []
    requests = match_notifications("evt-1", REFERRAL, events[0].data, {})
    assert [(r.webhook_type, r.recipient.role,
        r.recipient.tenant) for r in requests] == [("referral.no_eligible_providers", "borough", "croydon")]
    assert requests[0].data["failed_rules"] == {"capacity": 1}


def test_amendment_keeps_earlier_invitations() -> None:
    match = ReferralMatch("r-1")
    events, _ = match.match(REFERRAL, {"p1": provider("p1")}, "referral-raised")
    match.mutate(events)
    amended = replace(REFERRAL, primary_need="SEMH")
    events, _ = match.match(amended, {"p1": provider("p1"), "p2": provider("p2", lots=("SEMH",))}, "referral-amended")
    assert events[0].data["invited"] == ["p1", "p2"] and events[0].data["newly_invited"] == ["p2"]


def test_reconsider_invites_a_provider_that_joins_later_only_once() -> None:
    match = ReferralMatch("r-1")
    match.mutate(match.match(REFERRAL, {}, "referral-raised")[0])
    events, result = match.reconsider(REFERRAL, provider("late"), "provider-approved")
    assert result.eligible and events[0].data["newly_invited"] == ["late"]
    assert events[0].data["trigger"] == "provider-approved"
    assert match_notifications("e2", REFERRAL, events[0].data,
        {"late": provider("late")})[0].webhook_type == "referral.invited"
    match.mutate(events)
    assert match.reconsider(REFERRAL, provider("late"), "provider-updated")[0] == []
    assert match.reconsider(REFERRAL, provider("other", capacity=0), "provider-updated")[0] == []


def test_invitation_notifications_are_redacted_and_deterministic() -> None:
    events, _ = ReferralMatch("r-1").match(REFERRAL, {"p1": provider("p1")}, "referral-raised")
    requests = match_notifications("evt-1", REFERRAL, events[0].data, {"p1": provider("p1")})
    assert len(requests) == 1
    data = requests[0].to_data()
    assert data["webhook_type"] == "referral.invited"
    assert data["recipient"] == {"role": "provider", "tenant": "p1"}
    assert data["email"] == "p1@x.example" and data["referral_id"] == "r-1"
    assert data["data"]["district"] == "CR0" and data["data"]["age_at_start"] == 12
    assert "CR0 1NX" not in str(data) and "51.372" not in str(data)
    assert data["notification_id"] == notification_id("evt-1", "r-1", "referral.invited", "provider", "p1")
    again = match_notifications("evt-1", REFERRAL, events[0].data, {"p1": provider("p1")})
    assert again[0].notification_id == requests[0].notification_id
    assert requests[0].as_event().type == "notification-requested"


def test_rank_emits_only_when_the_shortlist_changes() -> None:
    match = ReferralMatch("r-1")
    offers = [Offer("o1", "p1", 425000, "2026-05-02T10:00:00Z", 1)]
    providers = {"p1": provider("p1")}
    events, shortlist = match.rank(REFERRAL, offers, providers)
    assert events[0].type == "shortlist-ranked" and events[0].data["entries"][0]["score"] == "88.00"
    match.mutate(events)
    assert match.rank(REFERRAL, offers, providers)[0] == []
    assert match.rank(REFERRAL, offers, providers, Policy(version=2))[0][0].data["policy_version"] == 2
    suspended = {"p1": provider("p1", status="suspended")}
    events, _ = match.rank(REFERRAL, offers, suspended)
    assert events[0].data["entries"] == [] and events[0].data["excluded"][0]["reason"] == "provider_suspended"


def test_shortlist_notifications_hide_rivals_prices_from_providers() -> None:
    match = ReferralMatch("r-1")
    offers = [Offer("o1", "p1", 425000, "t1", 1), Offer("o2", "p2", 400000, "t2", 2)]
    events, _ = match.rank(REFERRAL, offers, {"p1": provider("p1"), "p2": provider("p2")})
    requests = shortlist_notifications("e", REFERRAL, events[0].data)
    assert [(r.recipient.role, r.recipient.tenant) for r in requests] == [("borough", "croydon"), ("provider", "p2"),
        ("provider", "p1")]
    p1 = requests[2].data
    assert p1["rank"] == 2 and p1["ranked_offers"] == 2 and p1["weekly_fee_pence"] == 425000
    assert "400000" not in str(p1) and "price" not in p1 and "score" not in p1


def test_award_closed_and_suspension_notifications() -> None:
    awarded = {"offer_id": "o1", "provider_id": "p1", "weekly_fee_pence": 1000, "justification": None,
               "top_ranked_offer_id": "o1", "not_selected": [{"offer_id": "o2", "provider_id": "p2"}],
               "borough": "croydon", "awarded_at": "2026-06-01T00:00:00Z"}
    requests = award_notifications("e", "r-1", awarded, {"p1": provider("p1")})
    assert [(r.webhook_type, r.recipient.tenant, r.email) for r in requests] == [
        ("offer.accepted", "p1", "p1@x.example"), ("offer.not_selected", "p2", None)]
    assert "1000" not in str(requests[1].data)
    closed = closed_unfilled_notification("e", REFERRAL)
    assert (closed.webhook_type, closed.recipient.role, closed.recipient.tenant) == ("referral.closed_unfilled",
        "borough", "croydon")
    sus = suspension_notification("e", provider("p1"), "safeguarding")
    assert (sus.webhook_type, sus.recipient.tenant, sus.data["reason"]) == ("provider.suspended", "p1", "safeguarding")


def test_decision_record_carries_inputs_and_output() -> None:
    events, results = ReferralMatch("r-1").match(REFERRAL, {"p1": provider("p1")}, "referral-raised")
    record = decision_record("referral-matched", "evt-9", providers=[provider("p1")], referral=REFERRAL,
                             distances={r.provider_id: r.distance_km for r in results}, policy=None,
                             output=events[0].data)
    assert record["decision"] == "referral-matched" and record["event_id"] == "evt-9"
    assert record["output"] == events[0].data
    assert record["inputs"]["providers"][0]["provider_id"] == "p1"
    assert record["inputs"]["providers"][0]["quality_score"] == "80.00"
    assert Decimal(record["inputs"]["providers"][0]["distance_km"]) > 0
    assert record["inputs"]["referral"]["location"]["lat"] == 51.372
    ranked = decision_record("shortlist-ranked", "evt-10", offers=[Offer("o", "p1", 5, "t")], policy=Policy(),
                             output={"entries": []})
    assert ranked["inputs"]["policy"]["version"] == 1 and ranked["inputs"]["offers"][0]["weekly_fee_pence"] == 5


def test_one_event_notifies_the_same_recipient_about_each_referral_separately() -> None:
    """An approval inviting a provider to two open referrals must give two notifications, not one
    that the notification service would then drop as a duplicate."""
    first = notification_id("approval-1", "r-1", "referral.invited", "provider", "p1")
    second = notification_id("approval-1", "r-2", "referral.invited", "provider", "p1")
    assert first != second
