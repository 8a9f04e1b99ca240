"""Notification requests of the placement service (issue 16 item 8): to the borough and the provider."""
from __future__ import annotations

from services.placement.domain import WEBHOOKS, placement_notifications

BASE = {"borough": "croydon", "provider_id": "p1", "referral_id": "r1"}


def test_borough_and_provider_hear_each_type_once_with_stable_ids() -> None:
    assert set(WEBHOOKS) == {"placement-started", "placement-ended", "placement-review-due", "fee-change-requested",
                             "fee-change-decided", "award-collapsed"}
    requests = placement_notifications("e1", "pl1", "placement-ended", {**BASE, "ending": "unplanned",
                                                                          "reason": "breakdown"})
    assert [(r.webhook_type, r.recipient.role, r.recipient.tenant) for r in requests] == [
        ("placement.ended", "borough", "croydon"), ("placement.ended", "provider", "p1")]
    assert all(r.data["placement_id"] == "pl1" and r.data["reason"] == "breakdown" for r in requests)
    assert all(r.referral_id == "r1" and r.email is None for r in requests)
    again = placement_notifications("e1", "pl1", "placement-ended", {**BASE, "ending": "unplanned"})
    assert [r.notification_id for r in again] == [r.notification_id for r in requests]
    assert len({r.notification_id for r in requests}) == 2
    assert placement_notifications("e1", "pl1", "placement-opened", BASE) == []
    assert placement_notifications("e1", "pl1", "funding-agreed", BASE) == []


def test_provider_copy_of_a_collapse_hides_whom_the_borough_turned_to() -> None:
    data = {**BASE, "offer_id": "o1", "reason": "provider_withdrew", "next": "award_next_offer",
            "next_offer_id": "o2", "next_provider_id": "p2", "top_remaining_offer_id": "o2", "justification": "x"}
    borough, provider = placement_notifications("e2", "pl1", "award-collapsed", data)
    assert borough.data["next_provider_id"] == "p2" and borough.data["justification"] == "x"
    hidden = {"next_offer_id", "next_provider_id", "top_remaining_offer_id", "justification"}
    assert not hidden & set(provider.data) and provider.data["reason"] == "provider_withdrew"


def test_off_framework_provider_not_enrolled_gets_nothing() -> None:
    requests = placement_notifications("e3", "pl9", "placement-started",
                                       {**BASE, "provider_id": "off-framework:St Anne's", "referral_id": None,
                                        "started_on": "2026-09-01"})
    assert [(r.recipient.role, r.referral_id) for r in requests] == [("borough", None)]
