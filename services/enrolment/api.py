"""HTTP API of the enrolment service (DESIGN.md, "HTTP API"): parse, authorise, call `service`.

Applying is open; everything else needs a `commissioner` token, except that a provider may read
its own record and history and change its own operational details (capacity, contact email).
`auditor` tokens may read. Request models (requests.py) check shapes, types, codes and bounds; the
domain checks the rules. Order of refusals: see requests.py.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError

from shared import paging
from shared.auth import Principal, optional_principal, require
from shared.errors import Forbidden
from shared.service import ServiceRuntime
from shared.web import rule_of

from . import service
from .domain import ProviderStatus
from .profile import OPERATIONAL_FIELDS
from .requests import (
    RULE_WORDS,
    ApplicationIn,
    InspectionIn,
    LotQuery,
    OutcomesIn,
    ProviderChanges,
    ReasonIn,
    RequiredReasonIn,
)

MAX_OFFSET = 1_000_000

router = APIRouter(tags=["providers"])

COMMISSIONER = "commissioner"
READERS = ("commissioner", "auditor", "provider")


def _runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def _may_read(who: Principal, provider_id: str) -> None:
    if who.role == "provider" and who.tenant != provider_id:
        raise Forbidden("a provider may read only its own record", field="Authorization")


Commissioner = Annotated[Principal, Depends(require(COMMISSIONER))]
Reader = Annotated[Principal, Depends(require(*READERS))]


async def provider_may_change(provider_id: str, request: Request,
                              who: Annotated[Principal, Depends(require(COMMISSIONER, "provider"))]) -> Principal:
    """A provider changes only its own record, and only its operational fields (403). Judged, as it
    always was, after the body's JSON types (a malformed body is 422 first) and before the values'
    rules (a provider giving a field it may not change is told so, not what is wrong with the value)."""
    if who.role != "provider":
        return who
    try:
        body = await request.json()
        ProviderChanges.model_validate(body)
    except ValueError as invalid:  # not JSON, or not valid: the request model answers for its shape
        errors = invalid.errors() if isinstance(invalid, ValidationError) else [{"type": "json_invalid"}]
        if any(rule_of(error) not in RULE_WORDS for error in errors):
            return who
    if who.tenant != provider_id:
        raise Forbidden("a provider may change only its own record", field="Authorization")
    for name in sorted(set(body) & set(ProviderChanges.model_fields)):
        if name not in OPERATIONAL_FIELDS:
            raise Forbidden(f"a provider may change only {', '.join(sorted(OPERATIONAL_FIELDS))}"
                            f"; ask the commissioning team to change {name}", field=name,
                            rule="commissioner_only")
    return who


@router.post("/providers", status_code=201, summary="Apply to join the DPS (open)")
async def apply(body: ApplicationIn, request: Request, response: Response,
                who: Annotated[Principal | None, Depends(optional_principal)]) -> dict[str, Any]:
    view = await service.apply(_runtime(request), who=who, profile=body.to_profile())
    response.headers["Location"] = f"/providers/{view['id']}"
    return view


@router.get("/providers", summary="List providers, by status and lot")
async def list_providers(
    request: Request, response: Response,
    _who: Annotated[Principal, Depends(require("commissioner", "auditor"))],
    status: ProviderStatus | None = None,
    lot: Annotated[LotQuery, Query(description="SEN need code, e.g. ASD")] = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET, deprecated=True, description="deprecated: use `cursor`"),
    cursor: str | None = paging.CURSOR,
) -> dict[str, Any]:
    offset = paging.offset_of(cursor, offset, maximum=MAX_OFFSET)
    page = await service.list_providers(_runtime(request), status=status, lot=lot, limit=limit, offset=offset)
    following = paging.offset_page(request, response, offset=offset, limit=limit, returned=len(page["items"]),
                                   total=page["total"])
    return {**page, "next": following}


@router.get("/providers/{provider_id}", summary="One provider: profile, status, score")
async def get_provider(provider_id: str, request: Request, who: Reader) -> dict[str, Any]:
    _may_read(who, provider_id)
    return await service.get_provider(_runtime(request), provider_id=provider_id)


@router.get("/providers/{provider_id}/history", summary="The provider's events, in order")
async def history(provider_id: str, request: Request, who: Reader) -> dict[str, Any]:
    _may_read(who, provider_id)
    return await service.history(_runtime(request), provider_id=provider_id, who=who)


@router.post("/providers/{provider_id}/inspections", summary="Record an Ofsted inspection")
async def record_inspection(provider_id: str, body: InspectionIn, request: Request,
                            who: Commissioner) -> dict[str, Any]:
    return await service.record_inspection(_runtime(request), who=who, provider_id=provider_id,
                                           inspection=body.to_inspection())


@router.post("/providers/{provider_id}/outcomes", summary="Record outcome KPIs for a year")
async def record_outcomes(provider_id: str, body: OutcomesIn, request: Request,
                          who: Commissioner) -> dict[str, Any]:
    return await service.record_outcomes(_runtime(request), who=who, provider_id=provider_id,
                                         outcomes=body.to_outcomes())


@router.post("/providers/{provider_id}/approve", summary="Approve an applicant")
async def approve(provider_id: str, request: Request, who: Commissioner,
                  body: ReasonIn | None = None) -> dict[str, Any]:
    return await service.approve(_runtime(request), who=who, provider_id=provider_id,
                                 reason=body.reason if body else None)


@router.post("/providers/{provider_id}/reject", summary="Reject an applicant (reason)")
async def reject(provider_id: str, body: RequiredReasonIn, request: Request, who: Commissioner) -> dict[str, Any]:
    return await service.reject(_runtime(request), who=who, provider_id=provider_id, reason=body.reason)


@router.post("/providers/{provider_id}/suspend", summary="Suspend at once (reason)")
async def suspend(provider_id: str, body: RequiredReasonIn, request: Request, who: Commissioner) -> dict[str, Any]:
    return await service.suspend(_runtime(request), who=who, provider_id=provider_id, reason=body.reason)


@router.post("/providers/{provider_id}/reinstate", summary="Reinstate a suspended provider")
async def reinstate(provider_id: str, request: Request, who: Commissioner,
                    body: ReasonIn | None = None) -> dict[str, Any]:
    return await service.reinstate(_runtime(request), who=who, provider_id=provider_id,
                                   reason=body.reason if body else None)


@router.patch("/providers/{provider_id}", summary="Change profile fields")
async def update(provider_id: str, body: ProviderChanges, request: Request,
                 who: Annotated[Principal, Depends(provider_may_change)]) -> dict[str, Any]:
    return await service.update(_runtime(request), who=who, provider_id=provider_id, changes=body.to_changes())
