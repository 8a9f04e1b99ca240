"""Typed inputs of the referral domain, as the request models hand them over."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from services.referral.details import ReferralDetails
from services.referral.domain import Referral
from services.referral.offers import Invitation
from shared.aggregate import NewEvent
from shared.vocabulary import Gender, Location, NeedCode, PlacementType

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
REFERRAL_ID = "5b0e7a52-2a4c-4e7e-9a57-0a0b8f7b1c11"
PROVIDER_A = "0d1f6c9e-6f0a-4f1e-8a55-0f1d9b7e2a01"
PROVIDER_B = "0d1f6c9e-6f0a-4f1e-8a55-0f1d9b7e2a02"
PROVIDER_C = "0d1f6c9e-6f0a-4f1e-8a55-0f1d9b7e2a03"
INVITED = Invitation(known=True, invited=True)
NEEDS_PROFILE = {
    "physical_health": 0, "emotional_health": 2, "relationships": 1, "risk_taking": 0, "learning_disability": 2,
    "educational_progress": 2, "self_regulation": 3, "community_engagement": 1, "self_care": 1,
    "goals_and_aspirations": 1, "voice": 2, "identity": 1,
}
DETAILS = ReferralDetails(
    child_ref="CR-2026-0042",
    birth_date=date(2014, 5, 2),
    gender=Gender.MALE,
    primary_need=NeedCode.ASD,
    secondary_needs=(NeedCode.SLCN,),
    placement_type=PlacementType.DAY,
    required_from=date(2026, 9, 1),
    location=Location(postcode="CR0 1NX", lat=51.372, lon=-0.099),
    max_travel_km=30,
    needs_profile=NEEDS_PROFILE,
    outcomes=("Attend school full time by spring term", "Use a communication aid at home"),
    offer_deadline=datetime(2026, 7, 1, 17, 0, tzinfo=UTC),
)


def details(**changes: Any) -> ReferralDetails:
    return replace(DETAILS, **changes)


def raised(borough: str = "croydon", **changes: Any) -> Referral:
    referral = Referral(REFERRAL_ID)
    return referral.mutate(referral.raise_referral(borough, details(**changes), NOW))


def offer(referral: Referral, **overrides: Any) -> list[NewEvent]:
    args: dict[str, Any] = {
        "offer_id": "offer-1", "provider_id": PROVIDER_A, "invitation": INVITED, "weekly_fee_pence": 425000,
        "start_date": date(2026, 9, 1), "notes": "Place in our ASD unit", "now": NOW,
    }
    args.update(overrides)
    return referral.submit_offer(**args)


def with_offer(referral: Referral, offer_id: str, provider_id: str, fee: int = 425000) -> Referral:
    return referral.mutate(offer(referral, offer_id=offer_id, provider_id=provider_id, weekly_fee_pence=fee))
