"""HTTP API of the placement service: parse, authorise, call `service`."""
from __future__ import annotations

from datetime import date
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared import paging
from shared.auth import Principal, require
from shared.service import ServiceRuntime
from shared.vocabulary import NeedCode, PlacementType

from . import service
from .domain import (
    MAX_OUTCOMES,
    MAX_TEXT,
    MAX_WEEKLY_FEE_PENCE,
    CollapseReason,
    Contribution,
    Ending,
    EndReason,
    FeeDecision,
    NextStep,
    OffFrameworkReason,
    OutcomeRating,
    Progress,
    Stream,
)
from .service import READERS

router = APIRouter(tags=["placement"])

Fee = Annotated[int, Field(ge=1, le=MAX_WEEKLY_FEE_PENCE, description="pence a week", examples=[425000])]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Score = Annotated[int, Field(ge=0, le=3)]
IcbCode = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{3,5}$"),
                    Field(description="ODS code of the integrated care board paying, e.g. QKK")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OffFrameworkBody(Body):
    """A place bought outside the DPS, recorded by the borough that pays for it."""

    provider_id: UUID | None = Field(None, description="the provider's id if it is enrolled (not invited)")
    provider_name: Annotated[str | None, Field(max_length=150)] = None
    weekly_fee_pence: Fee
    planned_start: date
    primary_need: NeedCode | None = None
    placement_type: PlacementType | None = None
    outcomes: Annotated[list[Text], Field(max_length=MAX_OUTCOMES)] = []
    needs_profile: dict[str, Score]
    reason: OffFrameworkReason
    note: Text | None = None
    referral_id: UUID | None = None


class StartBody(Body):
    started_on: date


class EndBody(Body):
    ended_on: date
    ending: Ending
    reason: EndReason
    note: Text | None = None


class CollapseBody(Body):
    reason: CollapseReason
    note: Text | None = None
    next: NextStep
    next_offer_id: Annotated[str | None, Field(max_length=64)] = None
    justification: Text | None = None


class ContributionBody(Body):
    stream: Stream
    weekly_pence: Annotated[int, Field(ge=0, le=MAX_WEEKLY_FEE_PENCE)]
    icb_code: IcbCode | None = None


class FundingBody(Body):
    contributions: Annotated[list[ContributionBody], Field(min_length=1, max_length=3)]
    agreed_from: date
    agreed_until: date
    review_due: date


class RatingBody(Body):
    outcome: Text
    progress: Progress
    note: Text | None = None


class ReviewBody(Body):
    reviewed_on: date
    outcomes: Annotated[list[RatingBody], Field(max_length=MAX_OUTCOMES)]
    needs_profile: dict[str, Score]
    continues: bool
    next_review_due: date | None = None
    note: Text | None = None


class FeeChangeBody(Body):
    weekly_fee_pence: Fee
    effective_from: date
    reason: Text


class FeeDecisionBody(Body):
    decision: FeeDecision
    weekly_fee_pence: Fee | None = None
    note: Text | None = None


def _runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


ANYONE = ("borough", "provider", *READERS)


@router.post("/placements", status_code=201, summary="Record an off-framework placement (borough)")
async def create(body: OffFrameworkBody, request: Request,
                 who: Annotated[Principal, Depends(require("borough"))]) -> dict[str, Any]:
    return await service.open_off_framework(
        _runtime(request), who=who, provider_id=str(body.provider_id) if body.provider_id else None,
        provider_name=body.provider_name, weekly_fee_pence=body.weekly_fee_pence, planned_start=body.planned_start,
        primary_need=body.primary_need.value if body.primary_need else None,
        placement_type=body.placement_type.value if body.placement_type else None, outcomes=body.outcomes,
        needs_profile=body.needs_profile, reason=body.reason, note=body.note,
        referral_id=str(body.referral_id) if body.referral_id else None)


@router.get("/placements", summary="Placements the caller may see")
async def list_placements(
    request: Request, response: Response, who: Annotated[Principal, Depends(require(*ANYONE))],
    status: Annotated[str | None, Query(pattern="^(awarded|active|ended|collapsed)$")] = None,
    referral_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100, cursor: str | None = paging.CURSOR,
) -> dict[str, Any]:
    found = await service.list_placements(_runtime(request), who=who, status=status, referral_id=referral_id)
    offset = paging.offset_of(cursor, 0, maximum=paging.MAX_OFFSET)
    page = found[offset:offset + limit]
    following = paging.offset_page(request, response, offset=offset, limit=limit, returned=len(page), total=len(found))
    return {"placements": page, "next": following}


@router.get("/placements/reviews-due", summary="Started placements whose review is due soon or overdue")
async def reviews_due(request: Request, who: Annotated[Principal, Depends(require(*ANYONE))],
                      within_days: Annotated[int, Query(ge=0, le=366)] = 14) -> dict[str, Any]:
    return {"within_days": within_days,
            "reviews": await service.reviews_due(_runtime(request), who=who, within_days=within_days)}


@router.get("/placements/spend", summary="Spend over a period by borough, provider and funding stream")
async def spend(request: Request, who: Annotated[Principal, Depends(require(*ANYONE))],
                first: Annotated[date, Query(alias="from")],
                last: Annotated[date, Query(alias="to")]) -> dict[str, Any]:
    return await service.spend_between(_runtime(request), who=who, first=first, last=last)


@router.get("/placements/{placement_id}", summary="One placement, with its needs over time and fee history")
async def get_placement(placement_id: str, request: Request,
                        who: Annotated[Principal, Depends(require(*ANYONE))]) -> dict[str, Any]:
    return await service.get_placement(_runtime(request), who=who, placement_id=placement_id)


@router.post("/placements/{placement_id}/start", summary="The child has arrived (borough or provider)")
async def start(placement_id: str, body: StartBody, request: Request,
                who: Annotated[Principal, Depends(require("borough", "provider"))]) -> dict[str, Any]:
    return await service.start(_runtime(request), who=who, placement_id=placement_id, started_on=body.started_on)


@router.post("/placements/{placement_id}/end", summary="A started placement ends, planned or unplanned")
async def end(placement_id: str, body: EndBody, request: Request,
              who: Annotated[Principal, Depends(require("borough", "provider"))]) -> dict[str, Any]:
    return await service.end(_runtime(request), who=who, placement_id=placement_id, ended_on=body.ended_on,
                             ending=body.ending, reason=body.reason, note=body.note)


@router.post("/placements/{placement_id}/collapse",
             summary="The award collapses before the start; award the next offer or reopen (borough)")
async def collapse(placement_id: str, body: CollapseBody, request: Request,
                   who: Annotated[Principal, Depends(require("borough"))]) -> dict[str, Any]:
    return await service.collapse(_runtime(request), who=who, placement_id=placement_id, reason=body.reason,
                                  note=body.note, next_step=body.next, next_offer_id=body.next_offer_id,
                                  justification=body.justification)


@router.post("/placements/{placement_id}/funding", summary="A funding panel's decision (borough or commissioner)")
async def funding(placement_id: str, body: FundingBody, request: Request,
                  who: Annotated[Principal, Depends(require("borough", "commissioner"))]) -> dict[str, Any]:
    contributions = [Contribution(c.stream, c.weekly_pence, c.icb_code) for c in body.contributions]
    return await service.agree_funding(_runtime(request), who=who, placement_id=placement_id,
                                       contributions=contributions, agreed_from=body.agreed_from,
                                       agreed_until=body.agreed_until, review_due=body.review_due)


@router.post("/placements/{placement_id}/reviews", status_code=201,
             summary="A review: every outcome rated, the 12 indicators re-scored (borough)")
async def review(placement_id: str, body: ReviewBody, request: Request,
                 who: Annotated[Principal, Depends(require("borough"))]) -> dict[str, Any]:
    ratings = [OutcomeRating(r.outcome, r.progress, r.note) for r in body.outcomes]
    return await service.review(_runtime(request), who=who, placement_id=placement_id, reviewed_on=body.reviewed_on,
                                ratings=ratings, needs_profile=body.needs_profile, continues=body.continues,
                                next_review_due=body.next_review_due, note=body.note)


@router.post("/placements/{placement_id}/fee-changes", status_code=201,
             summary="The provider asks for a new weekly fee from a date")
async def request_fee_change(placement_id: str, body: FeeChangeBody, request: Request,
                             who: Annotated[Principal, Depends(require("provider"))]) -> dict[str, Any]:
    return await service.request_fee_change(_runtime(request), who=who, placement_id=placement_id,
                                            weekly_fee_pence=body.weekly_fee_pence,
                                            effective_from=body.effective_from, reason=body.reason)


@router.post("/placements/{placement_id}/fee-changes/{change_id}/decision",
             summary="The borough agrees, agrees in part or declines a fee change")
async def decide_fee_change(placement_id: str, change_id: str, body: FeeDecisionBody, request: Request,
                            who: Annotated[Principal, Depends(require("borough"))]) -> dict[str, Any]:
    return await service.decide_fee_change(_runtime(request), who=who, placement_id=placement_id,
                                           change_id=change_id, decision=body.decision,
                                           weekly_fee_pence=body.weekly_fee_pence, note=body.note)
