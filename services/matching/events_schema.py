"""Data models of the events matching publishes (placematch.matching, .audit, .notifications; issue 15)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shared.eventschema import EventData


class RuleResult(EventData):
    provider_id: str
    eligible: bool
    rules: dict[str, bool]


class ReferralMatched(EventData):
    referral_id: str
    borough: str
    invited: list[str]
    newly_invited: list[str]
    results: list[RuleResult]
    trigger: str


class ShortlistEntry(EventData):
    rank: int
    offer_id: str
    provider_id: str
    weekly_fee_pence: int
    quality: str
    price: str
    score: str


class Excluded(EventData):
    offer_id: str
    provider_id: str
    reason: str


class ShortlistRanked(EventData):
    referral_id: str
    borough: str
    policy_version: int
    entries: list[ShortlistEntry]
    excluded: list[Excluded]


class PolicyChanged(EventData):
    version: int
    quality_weight: str
    price_weight: str
    min_quality: str | None


class Recipient(EventData):
    role: str
    tenant: str


class NotificationRequested(EventData):
    notification_id: str
    webhook_type: str
    recipient: Recipient
    email: str | None
    referral_id: str | None
    data: dict[str, Any]


class DecisionRecorded(EventData):
    decision: str
    event_id: str
    inputs: dict[str, Any]
    output: dict[str, Any]


EVENTS: dict[tuple[str, int], type[BaseModel]] = {
    ("referral-matched", 1): ReferralMatched,
    ("shortlist-ranked", 1): ShortlistRanked,
    ("policy-changed", 1): PolicyChanged,
    ("notification-requested", 1): NotificationRequested,
    ("decision-recorded", 1): DecisionRecorded,
}
TOPICS = {"placematch.matching": ["referral-matched", "shortlist-ranked", "policy-changed"],
          "placematch.notifications": ["notification-requested"],
          "placematch.audit": ["decision-recorded"]}
