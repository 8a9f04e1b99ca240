"""The bodies the enrolment API answers with, as models (issue 15): documentation of what
`projections.provider_view` and `service.list_providers`/`history` return, used only for the OpenAPI
document (`shared.openapi` attaches `RESPONSES` by operationId); the bodies are built as before."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.vocabulary import Gender, NeedCode, PlacementType, ProviderKind

from .domain import ProviderStatus
from .scoring import Framework, LegacyGrade, ReportCardGrade, Safeguarding

SCORE = r"^\d{1,3}\.\d{2}$"


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocationOut(Closed):
    postcode: str
    lat: float | None
    lon: float | None


class ScoreOut(Closed):
    quality_score: str | None = Field(pattern=SCORE)
    inspection_score: str | None = Field(pattern=SCORE)
    outcomes_score: str | None = Field(pattern=SCORE)
    policy_version: int


class InspectionOut(Closed):
    framework: Framework
    inspected_on: str = Field(description="YYYY-MM-DD")
    overall: LegacyGrade | None = None
    safeguarding: Safeguarding | None = None
    areas: dict[str, ReportCardGrade] | None = None


class OutcomesOut(Closed):
    period: str
    kpis: dict[str, int]


class SuspensionOut(Closed):
    reason: str
    automatic: bool


class ProviderView(Closed):
    """A provider: profile at the top level, status, score and its evidence; `version` is the
    stream version (also the ETag)."""

    id: str
    status: ProviderStatus
    quality_score: str | None = Field(pattern=SCORE)
    name: str
    urn: str
    kind: ProviderKind
    lots: list[NeedCode]
    age_min: int
    age_max: int
    genders: list[Gender]
    placement_types: list[PlacementType]
    capacity: int
    location: LocationOut | None
    boroughs_served: list[str]
    contact_email: str
    score: ScoreOut | None
    inspections: list[InspectionOut]
    outcomes: list[OutcomesOut]
    suspension: SuspensionOut | None
    rejection_reason: str | None
    approval_blocked_by: str | None
    version: int


class ProviderPage(Closed):
    items: list[dict[str, Any]] = Field(description="providers as listed (id, name, status, lots, score, ...)")
    total: int
    limit: int
    offset: int
    next: str | None = Field(description="cursor of the next page (also in `Link: rel=next`); null on the last")


class ProviderHistory(Closed):
    provider_id: str
    events: list[dict[str, Any]] = Field(description="the provider's CloudEvents, in stream order")


RESPONSES: dict[str, type[BaseModel]] = {
    **{operation: ProviderView for operation in (
        "applyToJoin", "getProvider", "updateProvider", "recordInspection", "recordOutcomes", "approveProvider",
        "rejectProvider", "suspendProvider", "reinstateProvider")},
    "listProviders": ProviderPage,
    "getProviderHistory": ProviderHistory,
}

ETAGS: set[tuple[str, str]] = {
    ("GET", "/providers/{provider_id}"), ("PATCH", "/providers/{provider_id}"),
    *{("POST", f"/providers/{{provider_id}}/{action}") for action in (
        "inspections", "outcomes", "approve", "reject", "suspend", "reinstate")},
}
"""Routes answering with the provider's ETag; the writes among them honour If-Match (shared.preconditions)."""
