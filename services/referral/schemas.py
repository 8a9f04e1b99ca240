"""The referral API's machine-readable contract (issue 15), for `shared.openapi`/`shared.preconditions`."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.vocabulary import DeclineReason


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OfferView(Closed):
    """An offer, as `Offer.to_view` answers it, with its referral's id."""

    id: str
    provider_id: str
    weekly_fee_pence: int
    start_date: str = Field(description="YYYY-MM-DD")
    notes: str | None
    submitted_at: str
    status: str = Field(description="submitted | withdrawn | awarded | ...")
    submitted_by: str | None = Field(None, description="`actorid` (token `sub`) of the staff member who offered; "
                                     "null for offers recorded before issue 17")
    withdrawn_by: str | None = Field(None, description="`actorid` of who withdrew it; null unless withdrawn")
    referral_id: str


class OfferOut(Closed):
    id: str
    provider_id: str
    weekly_fee_pence: int
    start_date: str
    notes: str | None
    submitted_at: str
    status: str
    submitted_by: str | None = Field(None, description="`actorid` (token `sub`) of the staff member who offered")
    withdrawn_by: str | None = Field(None, description="`actorid` of who withdrew it; null unless withdrawn")


class OfferList(Closed):
    referral_id: str
    offers: list[OfferOut]


class Declined(Closed):
    referral_id: str
    provider_id: str
    reason: DeclineReason
    note: str | None


class ReferralView(BaseModel):
    """A referral as the caller may see it: everything for the owning borough (with `version`,
    also the ETag), a redacted view for an invited provider (`redacted`, `age`, the district only).
    Open: the details and outcome fields follow `referral-raised` and the award/withdrawal/closure."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str = Field(description="open | awarded | withdrawn | closed")
    raised_at: str
    version: int | None = Field(None, description="the stream version (the owning borough's view only)")
    offers: list[OfferOut]
    declines: list[dict[str, Any]]


class ReferralPage(Closed):
    items: list[dict[str, Any]]
    limit: int
    offset: int
    next: str | None = Field(description="cursor of the next page (also in `Link: rel=next`); null on the last")


RESPONSES: dict[str, type[BaseModel]] = {
    "submitOffer": OfferView, "withdrawOffer": OfferView, "listOffers": OfferList, "declineInvitation": Declined,
    "listReferrals": ReferralPage,
    **{operation: ReferralView for operation in (
        "raiseReferral", "getReferral", "amendReferral", "withdrawReferral", "closeReferral", "awardOffer",
        "eraseChildDetails")},
}

ETAGS: set[tuple[str, str]] = {
    ("GET", "/referrals/{referral_id}"),
    *{("POST", f"/referrals/{{referral_id}}/{action}") for action in ("amend", "withdraw", "close", "award", "erase")},
}
"""Routes answering with the referral's ETag (its stream version; the owning borough's view also
names it as `version`); the writes among them honour If-Match."""
