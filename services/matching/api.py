"""HTTP API of matching: eligible providers, shortlists, the ranking policy, market insights."""
from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from shared.auth import Principal, require
from shared.errors import RuleViolation
from shared.service import ServiceRuntime
from shared.vocabulary import NeedCode

from . import service
from .ranking import QUALITY_BOUNDS, WEIGHT_BOUNDS, two_place_decimal
from .service import READERS

router = APIRouter(tags=["matching"])

BOUNDS = {"quality_weight": WEIGHT_BOUNDS, "price_weight": WEIGHT_BOUNDS, "min_quality": QUALITY_BOUNDS}


def _weight(high: int, example: str, description: str) -> Any:
    return Field(examples=[example], description=description, json_schema_extra={"minimum": 0, "maximum": high})


class PolicyBody(BaseModel):
    """A new ranking policy; weights sum to 1.00, at most 2 decimal places each."""

    model_config = ConfigDict(extra="forbid")

    quality_weight: Annotated[Decimal, _weight(1, "0.60", "0.00–1.00, weight of the quality score")]
    price_weight: Annotated[Decimal, _weight(1, "0.40", "0.00–1.00, weight of the price score")]
    min_quality: Annotated[Decimal | None, _weight(100, "50.00", "0.00–100.00: offers from providers below it "
                                                                 "are not ranked")] = None

    @field_validator("quality_weight", "price_weight", "min_quality")
    @classmethod
    def _in_range_two_places(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        """Pydantic parses the number (its words for what is not one: `decimal_parsing`, `decimal_type`,
        `finite_number`, as always); the policy's bounds and places are checked in the policy's order,
        range first, with its words (`range`, `two_decimal_places`)."""
        name = info.field_name or ""
        if value is None:
            return None
        try:
            return two_place_decimal(value, name, *BOUNDS[name])
        except RuleViolation as violation:
            raise PydanticCustomError(violation.rule or "invalid", "{detail}", {"detail": violation.detail}) from None


def _runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


@router.get("/referrals/{referral_id}/eligible-providers",
            summary="Providers invited to a referral, with the result of every eligibility rule")
async def eligible_providers(
    referral_id: str, request: Request,
    who: Annotated[Principal, Depends(require("borough", *READERS))],
    all: bool = Query(False, description="also list providers evaluated and found not eligible"),
) -> dict[str, Any]:
    providers = await service.eligible_providers(_runtime(request), who=who, referral_id=referral_id,
                                                 include_all=all)
    return {"referral_id": referral_id, "providers": providers}


@router.get("/referrals/{referral_id}/shortlist",
            summary="The ranked shortlist (a provider sees only its own rank, never rivals' prices)")
async def shortlist(referral_id: str, request: Request,
                    who: Annotated[Principal, Depends(require("borough", "provider", *READERS))]) -> dict[str, Any]:
    return await service.shortlist(_runtime(request), who=who, referral_id=referral_id)


@router.get("/policy", summary="The current ranking policy")
async def get_policy(request: Request, who: Annotated[Principal, Depends(require())]) -> dict[str, Any]:
    return (await service.current_policy(_runtime(request))).as_dict()


@router.put("/policy", summary="Change the ranking policy (a new version; open shortlists are re-ranked)")
async def put_policy(body: PolicyBody, request: Request,
                     who: Annotated[Principal, Depends(require("commissioner"))]) -> dict[str, Any]:
    policy = await service.change_policy(_runtime(request), who=who, quality_weight=body.quality_weight,
                                         price_weight=body.price_weight, min_quality=body.min_quality)
    return policy.as_dict()


@router.get("/policy/history", summary="Every version of the ranking policy, newest first",
            operation_id="getPolicyHistory")
async def get_policy_history(request: Request,
                             who: Annotated[Principal, Depends(require("commissioner", "auditor"))]) -> dict[str, Any]:
    return {"items": await service.policy_history(_runtime(request))}


class PolicyPreviewBody(PolicyBody):
    """A proposed policy and the referral whose shortlist to rank under it."""

    referral_id: Annotated[str, Field(min_length=1, max_length=64, examples=["5b0c1e52-7f4e-4a53-9a53-3f1a2b9c8d10"])]


@router.post("/policy/preview", summary="What-if: one shortlist ranked under a proposed policy (changes nothing)",
             operation_id="previewPolicy")
async def preview_policy(body: PolicyPreviewBody, request: Request,
                         who: Annotated[Principal, Depends(require("commissioner", "auditor"))]) -> dict[str, Any]:
    return await service.preview_policy(_runtime(request), who=who, referral_id=body.referral_id,
                                        quality_weight=body.quality_weight, price_weight=body.price_weight,
                                        min_quality=body.min_quality)


@router.get("/insights/time-to-place", summary="Days from raised to award, bucketed",
            operation_id="getTimeToPlace")
async def get_time_to_place(
    request: Request,
    who: Annotated[Principal, Depends(require("commissioner", "auditor", "borough", "provider"))],
    need: NeedCode | None = Query(None, description="only this primary need code, e.g. ASD"),
) -> dict[str, Any]:
    """Counts of awards only; a borough sees its own referrals, others the partnership's."""
    return await service.time_to_place_distribution(_runtime(request), who=who, need=need)


@router.get("/insights/fees", summary="Weekly fee by need: quartiles, small cells suppressed",
            operation_id="getFeeQuartiles")
async def get_fee_quartiles(
    request: Request,
    who: Annotated[Principal, Depends(require("commissioner", "auditor", "borough", "provider"))],
    need: NeedCode | None = Query(None, description="only this primary need code, e.g. ASD"),
) -> dict[str, Any]:
    """A need with fewer than `PLACEMATCH_INSIGHTS_MIN_PROVIDERS` distinct providers is suppressed;
    providers get one figure per provider over final months only (no rival's fee derivable)."""
    return await service.fee_quartiles_by_need(_runtime(request), who=who, need=need)


@router.get("/insights", summary="Market insights by need code and month")
async def get_insights(
    request: Request,
    who: Annotated[Principal, Depends(require("commissioner", "auditor", "borough", "provider"))],
    need: NeedCode | None = Query(None, description="only this primary need code, e.g. ASD"),
    month: str | None = Query(None, pattern=r"^\d{4}-\d{2}$", description="only this month, YYYY-MM"),
) -> dict[str, Any]:
    """Commissioners and auditors get a per-borough breakdown; a borough its own referrals only;
    a provider the pooled figures, with no borough or child detail, and a fee median only where
    it rests on enough distinct providers' standing offers in a month that no longer changes
    (`suppressed`, `suppressed_reason` otherwise)."""
    return await service.insights(_runtime(request), who=who, need=need, month=month)
