"""Data models of the events placement publishes on placematch.placement (EVENTS.md; issue 15)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shared.eventschema import EventData


class Routed(EventData):
    """Every placement event names whom it concerns."""

    borough: str
    provider_id: str
    referral_id: str | None


class PlacementOpened(Routed):
    placement_id: str
    origin: str
    offer_id: str | None
    provider_name: str | None
    weekly_fee_pence: int
    planned_start: str | None
    primary_need: str | None
    placement_type: str | None
    outcomes: list[Any]
    needs_profile: dict[str, int]
    off_framework_reason: str | None
    off_framework_note: str | None
    justification: str | None
    opened_at: str


class PlacementStarted(Routed):
    started_on: str
    weekly_fee_pence: int


class PlacementEnded(Routed):
    ended_on: str
    ending: str
    reason: str
    note: str | None
    started_on: str
    days: int


class AwardCollapsed(Routed):
    offer_id: str | None
    reason: str
    note: str | None
    next: str
    next_offer_id: str | None
    next_provider_id: str | None
    top_remaining_offer_id: str | None
    justification: str | None


class FundingAgreed(Routed):
    decision: str
    contributions: list[dict[str, Any]]
    weekly_fee_pence: int
    agreed_from: str
    agreed_until: str | None
    review_due: str | None
    decided_by: str


class PlacementReviewed(Routed):
    review_id: str
    reviewed_on: str
    outcomes: list[dict[str, Any]]
    needs_profile: dict[str, int]
    continues: bool
    next_review_due: str | None
    note: str | None


class PlacementReviewDue(Routed):
    review_due: str
    overdue: bool
    noticed_on: str


class FeeChangeRequested(Routed):
    change_id: str
    weekly_fee_pence: int
    previous_weekly_fee_pence: int
    effective_from: str
    reason: str


class FeeChangeDecided(Routed):
    change_id: str
    decision: str
    weekly_fee_pence: int | None
    requested_weekly_fee_pence: int
    previous_weekly_fee_pence: int
    effective_from: str
    note: str | None


EVENTS: dict[tuple[str, int], type[BaseModel]] = {
    ("placement-opened", 1): PlacementOpened,
    ("placement-started", 1): PlacementStarted,
    ("placement-ended", 1): PlacementEnded,
    ("award-collapsed", 1): AwardCollapsed,
    ("funding-agreed", 1): FundingAgreed,
    ("placement-reviewed", 1): PlacementReviewed,
    ("placement-review-due", 1): PlacementReviewDue,
    ("fee-change-requested", 1): FeeChangeRequested,
    ("fee-change-decided", 1): FeeChangeDecided,
}
TOPICS = {"placematch.placement": [t for t, _ in EVENTS], "placematch.notifications": ["notification-requested"]}
