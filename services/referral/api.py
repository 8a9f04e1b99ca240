"""HTTP API of the referral service: parse, authorise, call the application service.

Request models check JSON types (strictly: `"425000"` is not a number of pence) and forbid
unknown fields; the domain checks everything else. Both refuse with 422 problem+json naming the
field and the rule, and nothing is recorded. Tenancy: a borough only ever sees its own referrals
(another borough's id is 404), an invited provider sees a redacted view with only its own offers.
"""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.referral import service
from shared.auth import Principal, require

MAX_OFFSET = 1_000_000

router = APIRouter(tags=["referrals"])

borough_only = require("borough")
provider_only = require("provider")
borough_or_provider = require("borough", "provider")

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token"},
    403: {"description": "role or provider may not do this"},
    404: {"description": "no such referral visible to the caller"},
    409: {"description": "not allowed in the current state (may carry Retry-After)"},
    422: {"description": "invalid input: problem+json with `field` and `rule`"},
}


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LocationIn(StrictModel):
    postcode: str = Field(examples=["CR0 1NX"])
    lat: float | None = Field(None, examples=[51.372])
    lon: float | None = Field(None, examples=[-0.099])


class NeedsProfileIn(StrictModel):
    """The 12 Valuing Care indicators, each 0-3."""

    physical_health: int
    emotional_health: int
    relationships: int
    risk_taking: int
    learning_disability: int
    educational_progress: int
    self_regulation: int
    community_engagement: int
    self_care: int
    goals_and_aspirations: int
    voice: int
    identity: int


class ReferralIn(StrictModel):
    child_ref: str = Field(description="pseudonymous case reference, never a name or NHS number",
                           examples=["CR-2026-0042"])
    birth_date: str = Field(description="YYYY-MM-DD", examples=["2014-05-02"])
    gender: str = Field(examples=["male"])
    primary_need: str = Field(description="DfE SEN primary need code", examples=["ASD"])
    secondary_needs: list[str] = Field(default_factory=list, examples=[["SLCN"]])
    placement_type: str = Field(examples=["day"])
    required_from: str = Field(description="YYYY-MM-DD", examples=["2026-09-01"])
    location: LocationIn | None = None
    max_travel_km: int | None = Field(None, examples=[30])
    needs_profile: NeedsProfileIn
    outcomes: list[str] = Field(examples=[["Attend school full time by spring term"]])
    offer_deadline: str = Field(description="ISO 8601 instant with zone", examples=["2026-07-01T17:00:00Z"])
    preferred_provider_id: str | None = None


class AmendmentIn(StrictModel):
    """Only the fields to change."""

    child_ref: str | None = None
    birth_date: str | None = None
    gender: str | None = None
    primary_need: str | None = None
    secondary_needs: list[str] | None = None
    placement_type: str | None = None
    required_from: str | None = None
    location: LocationIn | None = None
    max_travel_km: int | None = None
    needs_profile: NeedsProfileIn | None = None
    outcomes: list[str] | None = None
    offer_deadline: str | None = None
    preferred_provider_id: str | None = None


class ReasonIn(StrictModel):
    reason: str | None = Field(None, max_length=2000)


class OfferIn(StrictModel):
    weekly_fee_pence: int = Field(examples=[425000])
    start_date: str = Field(description="YYYY-MM-DD", examples=["2026-09-01"])
    notes: str | None = Field(None, examples=["Place in our ASD unit"])


class DeclineIn(StrictModel):
    reason: Literal["no_capacity", "cannot_meet_needs", "outside_area", "other"]
    note: str | None = Field(None, max_length=2000)


class AwardIn(StrictModel):
    offer_id: str
    justification: str | None = Field(None, description="required unless the offer tops the current shortlist")


def _runtime(request: Request) -> Any:
    return request.app.state.runtime


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(exclude_unset=True)


@router.post("/referrals", status_code=201, responses=PROBLEM_RESPONSES, summary="Raise a referral")
async def raise_referral(body: ReferralIn, request: Request, who: Principal = Depends(borough_only)) -> JSONResponse:
    referral = await service.raise_referral(_runtime(request), who, _dump(body))
    view = await service.view_for(_runtime(request), who, referral.id)
    return JSONResponse(view, status_code=201, headers={"Location": f"/referrals/{referral.id}"})


@router.get("/referrals", responses=PROBLEM_RESPONSES, summary="Referrals visible to the caller")
async def list_referrals(
    request: Request,
    status: Literal["open", "awarded", "withdrawn", "closed"] | None = None,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    who: Principal = Depends(borough_or_provider),
) -> dict[str, Any]:
    items = await service.list_for(_runtime(request), who, status, limit, offset)
    return {"items": items, "limit": limit, "offset": offset}


@router.get("/referrals/{referral_id}", responses=PROBLEM_RESPONSES, summary="One referral, as the caller may see it")
async def get_referral(referral_id: str, request: Request,
                       who: Principal = Depends(borough_or_provider)) -> dict[str, Any]:
    return await service.view_for(_runtime(request), who, referral_id)


@router.get("/referrals/{referral_id}/offers", responses=PROBLEM_RESPONSES,
            summary="Offers: all for the owning borough, its own for a provider")
async def list_offers(referral_id: str, request: Request,
                      who: Principal = Depends(borough_or_provider)) -> dict[str, Any]:
    view = await service.view_for(_runtime(request), who, referral_id)
    return {"referral_id": referral_id, "offers": view["offers"]}


@router.post("/referrals/{referral_id}/amend", responses=PROBLEM_RESPONSES, summary="Amend an open referral")
async def amend(referral_id: str, body: AmendmentIn, request: Request,
                who: Principal = Depends(borough_only)) -> dict[str, Any]:
    await service.amend(_runtime(request), who, referral_id, _dump(body))
    return await service.view_for(_runtime(request), who, referral_id)


@router.post("/referrals/{referral_id}/withdraw", responses=PROBLEM_RESPONSES, summary="Withdraw a referral")
async def withdraw(referral_id: str, request: Request, body: ReasonIn | None = None,
                   who: Principal = Depends(borough_only)) -> dict[str, Any]:
    await service.withdraw(_runtime(request), who, referral_id, body.reason if body else None)
    return await service.view_for(_runtime(request), who, referral_id)


@router.post("/referrals/{referral_id}/close", responses=PROBLEM_RESPONSES, summary="Close unfilled")
async def close(referral_id: str, request: Request, who: Principal = Depends(borough_only)) -> dict[str, Any]:
    await service.close(_runtime(request), who, referral_id)
    return await service.view_for(_runtime(request), who, referral_id)


@router.post("/referrals/{referral_id}/award", responses=PROBLEM_RESPONSES, summary="Award an offer")
async def award(referral_id: str, body: AwardIn, request: Request,
                who: Principal = Depends(borough_only)) -> dict[str, Any]:
    await service.award(_runtime(request), who, referral_id, body.offer_id, body.justification)
    return await service.view_for(_runtime(request), who, referral_id)


@router.post("/referrals/{referral_id}/erase", responses=PROBLEM_RESPONSES,
             summary="Erase the child's identifying details (child_ref, birth date) on request")
async def erase(referral_id: str, request: Request, who: Principal = Depends(borough_only)) -> dict[str, Any]:
    await service.erase_personal_data(_runtime(request), who, referral_id)
    return await service.view_for(_runtime(request), who, referral_id)


@router.get("/referrals/{referral_id}/audit", responses=PROBLEM_RESPONSES,
            summary="Evidence pack: every step across the services (auditor, owning borough)")
async def audit(referral_id: str, request: Request,
                who: Principal = Depends(require("auditor", "borough"))) -> dict[str, Any]:
    return await service.audit_pack(_runtime(request), who, referral_id)


@router.post("/referrals/{referral_id}/offers", status_code=201, responses=PROBLEM_RESPONSES,
             summary="Offer a place (invited providers)")
async def submit_offer(referral_id: str, body: OfferIn, request: Request,
                       who: Principal = Depends(provider_only)) -> JSONResponse:
    referral, offer_id = await service.submit_offer(_runtime(request), who, referral_id, _dump(body))
    offer = referral.offers[offer_id].to_view()
    return JSONResponse({**offer, "referral_id": referral_id}, status_code=201,
                        headers={"Location": f"/referrals/{referral_id}/offers/{offer_id}"})


@router.post("/referrals/{referral_id}/offers/{offer_id}/withdraw", responses=PROBLEM_RESPONSES,
             summary="Withdraw your offer")
async def withdraw_offer(referral_id: str, offer_id: str, request: Request, body: ReasonIn | None = None,
                         who: Principal = Depends(provider_only)) -> dict[str, Any]:
    referral = await service.withdraw_offer(_runtime(request), who, referral_id, offer_id,
                                            body.reason if body else None)
    return {**referral.offers[offer_id].to_view(), "referral_id": referral_id}


@router.post("/referrals/{referral_id}/decline", responses=PROBLEM_RESPONSES,
             summary="Decline an invitation with a reason code")
async def decline(referral_id: str, body: DeclineIn, request: Request,
                  who: Principal = Depends(provider_only)) -> dict[str, Any]:
    await service.decline(_runtime(request), who, referral_id, body.reason, body.note)
    return {"referral_id": referral_id, "provider_id": who.tenant, "reason": body.reason, "note": body.note}
