"""HTTP API of the enrolment service (DESIGN.md, "HTTP API").

Applying is open; everything else needs a `commissioner` token, except that a provider may read
its own record and history and change its own operational details (capacity, contact email).
`auditor` tokens may read. Request models check shapes and types; the domain checks the rules.
"""
from __future__ import annotations

import uuid
from datetime import date, datetime, timezone
from typing import Any, Callable, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy.exc import IntegrityError

from shared import context
from shared.aggregate import NewEvent
from shared.auth import Principal, optional_principal, require
from shared.errors import Forbidden, InvalidTransition, NotFound, RuleViolation
from shared.store import people_of

from services.enrolment import projections
from services.enrolment.domain import Provider
from services.enrolment.profile import NEED_CODES, OPERATIONAL_FIELDS

MAX_OFFSET = 1_000_000

router = APIRouter(tags=["providers"])

COMMISSIONER = "commissioner"
READERS = ("commissioner", "auditor", "provider")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocationIn(Model):
    postcode: str
    lat: float | None = None
    lon: float | None = None


class ApplicationIn(Model):
    name: str = Field(examples=["Riverside School"])
    urn: str = Field(description="Ofsted unique reference number", examples=["100001"])
    kind: str = Field(description="independent_special_school | non_maintained_special_school | "
                                  "specialist_college | childrens_home | fostering_agency")
    lots: list[str] = Field(description="SEN need codes served, e.g. ASD, SEMH, SLCN")
    age_min: StrictInt
    age_max: StrictInt
    genders: list[str] = Field(examples=[["female", "male"]])
    placement_types: list[str] = Field(examples=[["day", "residential_38"]])
    capacity: StrictInt = Field(description="Places free now (0 or more)")
    location: LocationIn | None = None
    boroughs_served: list[str] = Field(default_factory=list,
                                       description="Empty = every borough of the partnership")
    contact_email: str


class ProviderChanges(Model):
    """Any subset of the profile; `null` clears `location`."""

    name: str | None = None
    lots: list[str] | None = None
    age_min: StrictInt | None = None
    age_max: StrictInt | None = None
    genders: list[str] | None = None
    placement_types: list[str] | None = None
    capacity: StrictInt | None = None
    location: LocationIn | None = None
    boroughs_served: list[str] | None = None
    contact_email: str | None = None
    urn: str | None = Field(None, description="Cannot be changed (refused with 422)")
    kind: str | None = Field(None, description="Cannot be changed (refused with 422)")


class InspectionIn(Model):
    framework: str = Field(description="ofsted_legacy | ofsted_report_card")
    inspected_on: str = Field(examples=["2024-03-01"])
    overall: str | None = Field(None, description="Legacy: outstanding | good | "
                                                  "requires_improvement | inadequate")
    safeguarding: str | None = Field(None, description="Report card: met | not_met")
    areas: dict[str, str] | None = Field(None, description="Report card: area -> exceptional | "
                                                           "strong | expected | needs_attention "
                                                           "| urgent_improvement")


class OutcomesIn(Model):
    period: str = Field(examples=["2025-26"])
    kpis: dict[str, StrictInt] = Field(examples=[{"attendance": 92, "ehcp_progress": 75}])


class ReasonIn(Model):
    reason: str | None = None


class RequiredReasonIn(Model):
    reason: str


def _runtime(request: Request) -> Any:
    return request.app.state.runtime


async def _execute(request: Request, provider_id: str,
                   command: Callable[[Provider], list[NewEvent]]) -> dict[str, Any]:
    runtime = _runtime(request)
    provider, _ = await runtime.store.execute(
        Provider, provider_id, command, topic=runtime.topic("enrolment"),
        after=projections.update_provider_view)
    return projections.provider_view(provider)


async def _load(request: Request, provider_id: str) -> Provider:
    provider: Provider = await _runtime(request).store.load(Provider, provider_id)
    if not provider.exists:
        raise NotFound(f"no provider {provider_id}", field="provider_id")
    return provider


def _may_read(who: Principal, provider_id: str) -> None:
    if who.role == "provider" and who.tenant != provider_id:
        raise Forbidden("a provider may read only its own record", field="Authorization")


def _today() -> date:
    return datetime.now(timezone.utc).date()


async def _active_with_urn(request: Request, urn: str) -> str | None:
    async with _runtime(request).db.read() as conn:
        return await projections.active_provider_with_urn(conn, urn)


def _duplicate_urn(urn: str, existing: str | None) -> InvalidTransition:
    return InvalidTransition(f"a provider with URN {urn} is already enrolled "
                             f"({existing or 'just now, by another application'}); "
                             "update that one instead", field="urn", rule="duplicate_urn")


@router.post("/providers", status_code=201, summary="Apply to join the DPS (open)")
async def apply(body: ApplicationIn, request: Request, response: Response,
                who: Principal | None = Depends(optional_principal)) -> dict[str, Any]:
    provider_id = str(uuid.uuid4())
    if who is None:
        context.actor.set(f"provider:{provider_id}")
    urn = body.urn.strip()
    # The cheap check names the provider already enrolled; the read model's unique index
    # (projections.ACTIVE_URN_INDEX) settles applications that pass it at the same time.
    if (existing := await _active_with_urn(request, urn)) is not None:
        raise _duplicate_urn(urn, existing)
    try:
        view = await _execute(request, provider_id,
                              lambda p: p.submit_application(body.model_dump(exclude_unset=True)))
    except IntegrityError as error:  # the whole transaction rolled back: no event was recorded
        if not projections.violates_active_urn(error):
            raise
        raise _duplicate_urn(urn, await _active_with_urn(request, urn)) from None
    response.headers["Location"] = f"/providers/{provider_id}"
    return view


@router.get("/providers", summary="List providers, by status and lot")
async def list_providers(
    request: Request,
    status: Literal["applied", "approved", "rejected", "suspended"] | None = None,
    lot: str | None = Query(None, description="SEN need code, e.g. ASD"),
    limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=MAX_OFFSET),
    _who: Principal = Depends(require("commissioner", "auditor")),
) -> dict[str, Any]:
    lot_code = lot.strip().upper() if lot else None
    if lot_code is not None and lot_code not in NEED_CODES:
        raise RuleViolation(f"{lot!r} is not a lot; use one of {', '.join(NEED_CODES)}",
                            field="lot", rule="unknown_code")
    async with _runtime(request).db.read() as conn:
        items, total = await projections.list_providers(
            conn, status=status, lot=lot_code, limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/providers/{provider_id}", summary="One provider: profile, status, score")
async def get_provider(provider_id: str, request: Request,
                       who: Principal = Depends(require(*READERS))) -> dict[str, Any]:
    _may_read(who, provider_id)
    return projections.provider_view(await _load(request, provider_id))


@router.get("/providers/{provider_id}/history", summary="The provider's events, in order")
async def history(provider_id: str, request: Request,
                  who: Principal = Depends(require(*READERS))) -> dict[str, Any]:
    _may_read(who, provider_id)
    envelopes = await _runtime(request).store.read_stream(provider_id)
    if not envelopes:
        raise NotFound(f"no provider {provider_id}", field="provider_id")
    async with _runtime(request).db.read() as conn:  # who each actorid is: the audit record, not the events
        people = await people_of(conn, (e.actorid for e in envelopes))
    if who.role not in ("commissioner", "auditor"):  # a provider sees its own staff's names only
        people = {sub: p for sub, p in people.items() if p["actor"] == who.actor}
    return {"provider_id": provider_id, "events": [e.to_dict() for e in envelopes], "people": people}


@router.post("/providers/{provider_id}/inspections", summary="Record an Ofsted inspection")
async def record_inspection(provider_id: str, body: InspectionIn, request: Request,
                            _who: Principal = Depends(require(COMMISSIONER))) -> dict[str, Any]:
    payload = body.model_dump(exclude_unset=True, exclude_none=True)
    today = _today()
    return await _execute(request, provider_id,
                          lambda p: p.record_inspection(payload, today=today))


@router.post("/providers/{provider_id}/outcomes", summary="Record outcome KPIs for a year")
async def record_outcomes(provider_id: str, body: OutcomesIn, request: Request,
                          _who: Principal = Depends(require(COMMISSIONER))) -> dict[str, Any]:
    payload = body.model_dump()
    today = _today()
    return await _execute(request, provider_id, lambda p: p.record_outcomes(payload, today=today))


@router.post("/providers/{provider_id}/approve", summary="Approve an applicant")
async def approve(provider_id: str, request: Request, body: ReasonIn | None = None,
                  _who: Principal = Depends(require(COMMISSIONER))) -> dict[str, Any]:
    reason = body.reason if body else None
    return await _execute(request, provider_id, lambda p: p.approve(reason))


@router.post("/providers/{provider_id}/reject", summary="Reject an applicant (reason)")
async def reject(provider_id: str, body: RequiredReasonIn, request: Request,
                 _who: Principal = Depends(require(COMMISSIONER))) -> dict[str, Any]:
    return await _execute(request, provider_id, lambda p: p.reject(body.reason))


@router.post("/providers/{provider_id}/suspend", summary="Suspend at once (reason)")
async def suspend(provider_id: str, body: RequiredReasonIn, request: Request,
                  _who: Principal = Depends(require(COMMISSIONER))) -> dict[str, Any]:
    return await _execute(request, provider_id, lambda p: p.suspend(body.reason))


@router.post("/providers/{provider_id}/reinstate", summary="Reinstate a suspended provider")
async def reinstate(provider_id: str, request: Request, body: ReasonIn | None = None,
                    _who: Principal = Depends(require(COMMISSIONER))) -> dict[str, Any]:
    reason = body.reason if body else None
    return await _execute(request, provider_id, lambda p: p.reinstate(reason))


@router.patch("/providers/{provider_id}", summary="Change profile fields")
async def update(provider_id: str, body: ProviderChanges, request: Request,
                 who: Principal = Depends(require("commissioner", "provider"))) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    if who.role == "provider":
        if who.tenant != provider_id:
            raise Forbidden("a provider may change only its own record", field="Authorization")
        for name in sorted(changes):
            if name not in OPERATIONAL_FIELDS:
                raise Forbidden(f"a provider may change only {', '.join(sorted(OPERATIONAL_FIELDS))}"
                                f"; ask the commissioning team to change {name}", field=name,
                                rule="commissioner_only")
    return await _execute(request, provider_id, lambda p: p.update(changes))
