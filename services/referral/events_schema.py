"""Data models of the events referral publishes on placematch.referral (EVENTS.md; issue 15)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shared.eventschema import EventData


class Sealed(EventData):
    sealed: str


class ReferralContent(EventData):
    borough: str
    child_ref: Sealed | None
    birth_date: Sealed | None
    age_at_start: int | None
    gender: str
    primary_need: str
    secondary_needs: list[str]
    placement_type: str
    required_from: str
    location: dict[str, Any] | None
    max_travel_km: int | None
    needs_profile: dict[str, int]
    outcomes: list[Any]
    offer_deadline: str | None
    preferred_provider_id: str | None = None


class ReferralRaised(ReferralContent):
    raised_at: str


class ReferralAmended(EventData):
    changes: dict[str, Any]
    referral: dict[str, Any]


class ReferralWithdrawn(EventData):
    reason: str | None


class OfferSubmitted(EventData):
    offer_id: str
    provider_id: str
    weekly_fee_pence: int
    start_date: str
    notes: str | None
    submitted_at: str


class OfferWithdrawn(EventData):
    offer_id: str
    provider_id: str
    reason: str | None


class InvitationDeclined(EventData):
    provider_id: str
    reason: str
    note: str | None


class OfferRef(EventData):
    offer_id: str
    provider_id: str


class PlacementAwarded(EventData):
    offer_id: str
    provider_id: str
    weekly_fee_pence: int
    justification: str | None
    top_ranked_offer_id: str | None
    not_selected: list[OfferRef]
    borough: str
    awarded_at: str


class ReferralClosed(EventData):
    reason: str
    unfilled: bool
    borough: str


class PersonalDataErased(EventData):
    fields: list[str]
    borough: str
    erased_at: str


EVENTS: dict[tuple[str, int], type[BaseModel]] = {
    ("referral-raised", 1): ReferralRaised,
    ("referral-amended", 1): ReferralAmended,
    ("referral-withdrawn", 1): ReferralWithdrawn,
    ("offer-submitted", 1): OfferSubmitted,
    ("offer-withdrawn", 1): OfferWithdrawn,
    ("invitation-declined", 1): InvitationDeclined,
    ("placement-awarded", 1): PlacementAwarded,
    ("referral-closed", 1): ReferralClosed,
    ("personal-data-erased", 1): PersonalDataErased,
}
TOPICS = {"placematch.referral": [t for t, _ in EVENTS]}
