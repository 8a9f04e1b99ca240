"""HTTP API of the referral service: parse, authorise, call the application service.

Request models parse every value once into its type (dates, instants, UUIDs, need codes, genders,
placement types, decline reasons, bounded numbers, visible text), strictly (`"425000"` is not a
number of pence) and without unknown fields; the domain gets typed values and checks the rules
between them. Both refuse with 422 problem+json naming the field and the rule, and nothing is
recorded. Tenancy: a borough only ever sees its own referrals (another borough's id is 404), an
invited provider sees a redacted view with only its own offers.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from shared import paging
from shared.auth import Principal, require
from shared.inputs import clean_text, is_blank
from shared.service import ServiceRuntime
from shared.vocabulary import (
    DeclineReason,
    Gender,
    Location,
    NeedCode,
    PlacementType,
    district_of,
    normalise_postcode,
    values,
)

from . import projections, service
from .details import (
    CHILD_REF,
    MAX_CHILD_REF,
    MAX_OUTCOME_LENGTH,
    MAX_OUTCOMES,
    MAX_POSTCODE_LENGTH,
    MAX_TRAVEL_KM,
    NEEDS_SCORE_MAX,
    ReferralDetails,
)
from .offers import MAX_JUSTIFICATION, MAX_OFFER_ID, MAX_TEXT, MAX_WEEKLY_FEE_PENCE

MAX_OFFSET = 1_000_000
MAX_CODE = 64
MAX_NEED_CODE = 8  # as written in a list of secondary needs

router = APIRouter(tags=["referrals"])

borough_only = require("borough")
provider_only = require("provider")
borough_or_provider = require("borough", "provider")
auditor_or_borough = require("auditor", "borough")
referral_listers = require("borough", "provider", "commissioner", "auditor")

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token"},
    403: {"description": "role or provider may not do this"},
    404: {"description": "no such referral visible to the caller"},
    409: {"description": "not allowed in the current state (may carry Retry-After)"},
    422: {"description": "invalid input: problem+json with `field` and `rule`"},
}

# --- request fields: each a type, parsed once, refused with the rule words of before ---------------

E = TypeVar("E", bound=StrEnum)


def _refuse(rule: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(rule, message)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _refuse("string_type", "Input should be a valid string")
    return value


def _visible(max_length: int) -> Callable[[str], str]:
    """Text that says something, at most `max_length` characters (kept as given)."""
    def check(value: str) -> str:
        if is_blank(value):
            raise _refuse("not_empty", "must not be empty (or only invisible characters)")
        if len(value) > max_length:
            raise _refuse("max_length", f"must be at most {max_length} characters")
        return value
    return check


def _cleaned_or_none(value: str | None) -> str | None:
    """Free text stored without invisible padding; nothing visible is no text."""
    return None if value is None else clean_text(value) or None


def _child_ref(value: str) -> str:
    _visible(MAX_CHILD_REF)(value)
    if not CHILD_REF.match(value):
        raise _refuse("pseudonymous", "must be a pseudonymous reference (letters, digits, - _ / .)")
    return value


def _iso_date(value: Any) -> date:
    text = _string(value)
    try:
        if len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise _refuse("format", "must be a date YYYY-MM-DD") from None


def _instant(value: Any) -> datetime:
    text = _string(value)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _refuse("format", "must be an ISO 8601 instant") from None
    if moment.tzinfo is None:
        raise _refuse("timezone", "must carry a time zone, e.g. 2026-07-01T17:00:00Z")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is in the year 10000 in UTC
        raise _refuse("range", "is outside the years 1 to 9999 in UTC") from None


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _uuid(value: Any) -> UUID:
    if not _UUID.match(_string(value)):
        raise _refuse("format", "must be a UUID")
    return UUID(value)


def _postcode(value: str) -> str:
    _visible(MAX_POSTCODE_LENGTH)(value)
    postcode = normalise_postcode(value)
    if district_of(postcode) is None:
        raise _refuse("format", f"'{value}' is not a UK postcode")
    return postcode


def _code(codes: type[E], rule: str, max_length: int = MAX_CODE) -> Callable[[Any], E]:
    """One of `codes`, refused as `rule` otherwise (text first: given, visible, not too long)."""
    def parse(value: Any) -> E:
        text = _visible(max_length)(_string(value))
        if text not in values(codes):
            raise _refuse(rule, f"must be one of {sorted(values(codes))}")
        return codes(text)
    return parse


def _one_of(codes: type[E]) -> Callable[[Any], E]:
    """One of `codes`; anything else (another string, a number, null) is refused as `one_of`."""
    def parse(value: Any) -> E:
        if not isinstance(value, str) or value not in values(codes):
            raise _refuse("one_of", f"must be one of {sorted(values(codes))}")
        return codes(value)
    return parse


def _outcomes(value: list[str]) -> list[str]:
    if not value:
        raise _refuse("not_empty", "must name at least one outcome wanted")
    if len(value) > MAX_OUTCOMES:
        raise _refuse("max_items", f"may list at most {MAX_OUTCOMES} outcomes")
    return value


ChildRef = Annotated[str, AfterValidator(_child_ref),
                     Field(description="pseudonymous case reference, never a name or NHS number",
                           examples=["CR-2026-0042"], json_schema_extra={"maxLength": MAX_CHILD_REF})]
IsoDate = Annotated[date, BeforeValidator(_iso_date), Field(description="YYYY-MM-DD")]
Instant = Annotated[AwareDatetime, BeforeValidator(_instant), Field(description="ISO 8601 instant with zone")]
ProviderRef = Annotated[UUID, BeforeValidator(_uuid)]
PrimaryNeed = Annotated[NeedCode, BeforeValidator(_code(NeedCode, "need_code")),
                        Field(description="DfE SEN primary need code")]
SecondaryNeed = Annotated[NeedCode, BeforeValidator(_code(NeedCode, "need_code", MAX_NEED_CODE))]
GenderCode = Annotated[Gender, BeforeValidator(_code(Gender, "one_of"))]
Placement = Annotated[PlacementType, BeforeValidator(_code(PlacementType, "one_of"))]
Outcomes = Annotated[list[Annotated[str, AfterValidator(_visible(MAX_OUTCOME_LENGTH)), AfterValidator(clean_text)]],
                     AfterValidator(_outcomes), Field(json_schema_extra={"minItems": 1, "maxItems": MAX_OUTCOMES})]
Score = Annotated[int, Field(ge=0, le=NEEDS_SCORE_MAX)]
TravelKm = Annotated[int, Field(ge=1, le=MAX_TRAVEL_KM)]
FreeText = Annotated[Annotated[str, Field(max_length=MAX_TEXT)] | None, AfterValidator(_cleaned_or_none)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LocationIn(StrictModel):
    postcode: Annotated[str, AfterValidator(_postcode),
                        Field(examples=["CR0 1NX"], json_schema_extra={"maxLength": MAX_POSTCODE_LENGTH})]
    lat: Annotated[float, Field(ge=-90, le=90)] | None = Field(None, examples=[51.372])
    lon: Annotated[float, Field(ge=-180, le=180)] | None = Field(None, examples=[-0.099])

    def location(self) -> Location:
        return Location(postcode=self.postcode, lat=self.lat, lon=self.lon)


class NeedsProfileIn(StrictModel):
    """The 12 Valuing Care indicators, each 0-3."""

    physical_health: Score
    emotional_health: Score
    relationships: Score
    risk_taking: Score
    learning_disability: Score
    educational_progress: Score
    self_regulation: Score
    community_engagement: Score
    self_care: Score
    goals_and_aspirations: Score
    voice: Score
    identity: Score


class ReferralIn(StrictModel):
    child_ref: ChildRef
    birth_date: IsoDate = Field(examples=["2014-05-02"])
    gender: GenderCode = Field(examples=["male"])
    primary_need: PrimaryNeed = Field(examples=["ASD"])
    secondary_needs: list[SecondaryNeed] = Field(default_factory=list, examples=[["SLCN"]])
    placement_type: Placement = Field(examples=["day"])
    required_from: IsoDate = Field(examples=["2026-09-01"])
    location: LocationIn | None = None
    max_travel_km: TravelKm | None = Field(None, examples=[30])
    needs_profile: NeedsProfileIn
    outcomes: Outcomes = Field(examples=[["Attend school full time by spring term"]])
    offer_deadline: Instant = Field(examples=["2026-07-01T17:00:00Z"])
    preferred_provider_id: ProviderRef | None = None

    def details(self) -> ReferralDetails:
        return ReferralDetails(**_typed(self, ReferralDetails.FIELDS))


class AmendmentIn(StrictModel):
    """Only the fields to change; `null` clears an optional one."""

    child_ref: ChildRef | None = None
    birth_date: IsoDate | None = None
    gender: GenderCode | None = None
    primary_need: PrimaryNeed | None = None
    secondary_needs: list[SecondaryNeed] | None = None
    placement_type: Placement | None = None
    required_from: IsoDate | None = None
    location: LocationIn | None = None
    max_travel_km: TravelKm | None = None
    needs_profile: NeedsProfileIn | None = None
    outcomes: Outcomes | None = None
    offer_deadline: Instant | None = None
    preferred_provider_id: ProviderRef | None = None

    def changes(self) -> dict[str, Any]:
        """The fields given, in the model's order, as the domain takes them."""
        return _typed(self, [name for name in type(self).model_fields if name in self.model_fields_set])


def _typed(body: BaseModel, names: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in names:
        value = getattr(body, name)
        if isinstance(value, LocationIn):
            value = value.location()
        elif isinstance(value, NeedsProfileIn):
            value = value.model_dump()
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return values


class ReasonIn(StrictModel):
    reason: FreeText = None


class OfferIn(StrictModel):
    weekly_fee_pence: Annotated[int, Field(ge=1, le=MAX_WEEKLY_FEE_PENCE, examples=[425000])]
    start_date: IsoDate = Field(examples=["2026-09-01"])
    notes: str | None = Field(None, max_length=MAX_TEXT, examples=["Place in our ASD unit"])


class DeclineIn(StrictModel):
    reason: Annotated[DeclineReason, BeforeValidator(_one_of(DeclineReason))]
    note: str | None = Field(None, max_length=MAX_TEXT)
    """As sent: the answer echoes it; the decline records it cleaned."""


class AwardIn(StrictModel):
    offer_id: Annotated[str, AfterValidator(_visible(MAX_OFFER_ID)),
                        Field(json_schema_extra={"maxLength": MAX_OFFER_ID})]
    justification: Annotated[Annotated[str, Field(max_length=MAX_JUSTIFICATION)] | None,
                             AfterValidator(_cleaned_or_none)] = \
        Field(None, description="required unless the offer tops the current shortlist")


def _runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


# --- routes ----------------------------------------------------------------------------------------


@router.post("/referrals", status_code=201, responses=PROBLEM_RESPONSES, summary="Raise a referral")
async def raise_referral(body: ReferralIn, request: Request, who: Principal = Depends(borough_only)) -> JSONResponse:
    referral = await service.raise_referral(_runtime(request), who=who, details=body.details())
    return JSONResponse(projections.borough_view_of(referral), status_code=201,
                        headers={"Location": f"/referrals/{referral.id}"})


@router.get("/referrals", responses=PROBLEM_RESPONSES, summary="Referrals visible to the caller")
async def list_referrals(
    request: Request, response: Response,
    status: Literal["open", "awarded", "withdrawn", "closed"] | None = None,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=MAX_OFFSET, deprecated=True, description="deprecated: use `cursor`"),
    cursor: str | None = paging.CURSOR,
    who: Principal = Depends(referral_listers),
) -> dict[str, Any]:
    """A borough its own referrals, a provider those it was invited to (redacted), commissioners and
    auditors every borough's (redacted as a provider sees them, with the borough)."""
    offset = paging.offset_of(cursor, offset, maximum=MAX_OFFSET)
    items = await service.list_for(_runtime(request), who=who, status=status, limit=limit, offset=offset)
    following = paging.offset_page(request, response, offset=offset, limit=limit, returned=len(items))
    return {"items": items, "limit": limit, "offset": offset, "next": following}


@router.get("/referrals/{referral_id}", responses=PROBLEM_RESPONSES, summary="One referral, as the caller may see it")
async def get_referral(referral_id: str, request: Request,
                       who: Principal = Depends(borough_or_provider)) -> dict[str, Any]:
    return await service.view_for(_runtime(request), who=who, referral_id=referral_id)


@router.get("/referrals/{referral_id}/offers", responses=PROBLEM_RESPONSES,
            summary="Offers: all for the owning borough, its own for a provider")
async def list_offers(referral_id: str, request: Request,
                      who: Principal = Depends(borough_or_provider)) -> dict[str, Any]:
    view = await service.view_for(_runtime(request), who=who, referral_id=referral_id)
    return {"referral_id": referral_id, "offers": view["offers"]}


@router.post("/referrals/{referral_id}/amend", responses=PROBLEM_RESPONSES, summary="Amend an open referral")
async def amend(referral_id: str, body: AmendmentIn, request: Request,
                who: Principal = Depends(borough_only)) -> dict[str, Any]:
    referral = await service.amend(_runtime(request), who=who, referral_id=referral_id, changes=body.changes())
    return projections.borough_view_of(referral)


@router.post("/referrals/{referral_id}/withdraw", responses=PROBLEM_RESPONSES, summary="Withdraw a referral")
async def withdraw(referral_id: str, request: Request, body: ReasonIn | None = None,
                   who: Principal = Depends(borough_only)) -> dict[str, Any]:
    referral = await service.withdraw(_runtime(request), who=who, referral_id=referral_id,
                                      reason=body.reason if body else None)
    return projections.borough_view_of(referral)


@router.post("/referrals/{referral_id}/close", responses=PROBLEM_RESPONSES, summary="Close unfilled")
async def close(referral_id: str, request: Request, who: Principal = Depends(borough_only)) -> dict[str, Any]:
    referral = await service.close(_runtime(request), who=who, referral_id=referral_id)
    return projections.borough_view_of(referral)


@router.post("/referrals/{referral_id}/award", responses=PROBLEM_RESPONSES, summary="Award an offer")
async def award(referral_id: str, body: AwardIn, request: Request,
                who: Principal = Depends(borough_only)) -> dict[str, Any]:
    referral = await service.award(_runtime(request), who=who, referral_id=referral_id, offer_id=body.offer_id,
                                   justification=body.justification)
    return projections.borough_view_of(referral)


@router.post("/referrals/{referral_id}/erase", responses=PROBLEM_RESPONSES,
             summary="Erase the child's identifying details (child_ref, birth date) on request")
async def erase(referral_id: str, request: Request, who: Principal = Depends(borough_only)) -> dict[str, Any]:
    referral = await service.erase_personal_data(_runtime(request), who=who, referral_id=referral_id)
    return projections.borough_view_of(referral)


@router.get("/referrals/{referral_id}/audit", responses=PROBLEM_RESPONSES,
            summary="Evidence pack: every step across the services (auditor, owning borough)")
async def audit(referral_id: str, request: Request,
                who: Principal = Depends(auditor_or_borough)) -> dict[str, Any]:
    return await service.audit_pack(_runtime(request), who=who, referral_id=referral_id)


@router.post("/referrals/{referral_id}/offers", status_code=201, responses=PROBLEM_RESPONSES,
             summary="Offer a place (invited providers)")
async def submit_offer(referral_id: str, body: OfferIn, request: Request,
                       who: Principal = Depends(provider_only)) -> JSONResponse:
    referral, offer_id = await service.submit_offer(
        _runtime(request), who=who, referral_id=referral_id, weekly_fee_pence=body.weekly_fee_pence,
        start_date=body.start_date, notes=body.notes)
    offer = referral.offers[offer_id].to_view()
    return JSONResponse({**offer, "referral_id": referral_id}, status_code=201,
                        headers={"Location": f"/referrals/{referral_id}/offers/{offer_id}"})


@router.post("/referrals/{referral_id}/offers/{offer_id}/withdraw", responses=PROBLEM_RESPONSES,
             summary="Withdraw your offer")
async def withdraw_offer(referral_id: str, offer_id: str, request: Request, body: ReasonIn | None = None,
                         who: Principal = Depends(provider_only)) -> dict[str, Any]:
    referral = await service.withdraw_offer(_runtime(request), who=who, referral_id=referral_id, offer_id=offer_id,
                                            reason=body.reason if body else None)
    return {**referral.offers[offer_id].to_view(), "referral_id": referral_id}


@router.post("/referrals/{referral_id}/decline", responses=PROBLEM_RESPONSES,
             summary="Decline an invitation with a reason code")
async def decline(referral_id: str, body: DeclineIn, request: Request,
                  who: Principal = Depends(provider_only)) -> dict[str, Any]:
    await service.decline(_runtime(request), who=who, referral_id=referral_id, reason=body.reason,
                          note=_cleaned_or_none(body.note))
    return {"referral_id": referral_id, "provider_id": who.tenant, "reason": body.reason.value, "note": body.note}
