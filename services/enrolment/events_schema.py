"""Data models of the events enrolment publishes on placematch.enrolment (EVENTS.md; issue 15)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shared.eventschema import EventData

Score = str | None


class Profile(EventData):
    """The provider's full current profile (top level of applied/approved/reinstated)."""

    name: str
    urn: str | None = None
    kind: str
    lots: list[str]
    age_min: int
    age_max: int
    genders: list[str]
    placement_types: list[str]
    capacity: int
    location: dict[str, Any] | None
    boroughs_served: list[str]
    contact_email: str | None = None


class ProviderApplied(Profile):
    pass


class ProviderInspected(EventData):
    framework: str
    inspected_on: str


class ProviderOutcomesRecorded(EventData):
    period: str
    kpis: dict[str, int | float]


class ProviderRescored(EventData):
    quality_score: str
    policy_version: int
    inspection_score: Score
    outcomes_score: Score
    inputs: dict[str, Any]


class ProviderApproved(Profile):
    quality_score: Score
    reason: str | None = None
    placements_held: int | None = None


class ProviderRejected(EventData):
    reason: str | None


class ProviderSuspended(EventData):
    reason: str | None
    automatic: bool


class ProviderReinstated(ProviderApproved):
    pass


class ProviderUpdated(EventData):
    changes: dict[str, Any]
    profile: dict[str, Any]
    quality_score: Score


class ProviderPlacementRecorded(EventData):
    placement_id: str
    cause: str
    cause_id: str
    placement: dict[str, Any]


class ProviderVacanciesChanged(EventData):
    placement_id: str
    cause: str
    capacity: int
    placements_held: int
    vacancies: int


EVENTS: dict[tuple[str, int], type[BaseModel]] = {
    ("provider-applied", 1): ProviderApplied,
    ("provider-inspected", 1): ProviderInspected,
    ("provider-outcomes-recorded", 1): ProviderOutcomesRecorded,
    ("provider-rescored", 1): ProviderRescored,
    ("provider-approved", 1): ProviderApproved,
    ("provider-rejected", 1): ProviderRejected,
    ("provider-suspended", 1): ProviderSuspended,
    ("provider-reinstated", 1): ProviderReinstated,
    ("provider-updated", 1): ProviderUpdated,
    ("provider-placement-recorded", 1): ProviderPlacementRecorded,
    ("provider-vacancies-changed", 1): ProviderVacanciesChanged,
}
TOPICS = {"placematch.enrolment": [t for t, _ in EVENTS]}
