"""The `Provider` aggregate: a school, college, home or agency enrolling in the DPS.

Lifecycle: applied → approved | rejected; approved → suspended → approved (reinstated).
A rejected provider is finished: it may apply again as a new provider. Commands take typed values
(`requests.py` has checked every shape, code and bound), check the business rules and return the
events to record (never mutating); `apply` folds a recorded event into state. Event `data` follows
shared/EVENTS.md.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from shared.aggregate import Aggregate, NewEvent
from shared.errors import InvalidTransition, NotFound, RuleViolation
from shared.vocabulary import format_score

from .profile import Profile, ProfileChanges
from .scoring import (
    CURRENT_POLICY,
    Inspection,
    Outcomes,
    PlacementOutcomes,
    PlacementRecord,
    QualityPolicy,
    QualityScore,
    current_inspection,
    current_outcomes,
    held_places,
)

PROVIDER_APPLIED = "provider-applied"
PROVIDER_INSPECTED = "provider-inspected"
PROVIDER_OUTCOMES_RECORDED = "provider-outcomes-recorded"
PROVIDER_RESCORED = "provider-rescored"
PROVIDER_APPROVED = "provider-approved"
PROVIDER_REJECTED = "provider-rejected"
PROVIDER_SUSPENDED = "provider-suspended"
PROVIDER_REINSTATED = "provider-reinstated"
PROVIDER_UPDATED = "provider-updated"
PROVIDER_PLACEMENT_RECORDED = "provider-placement-recorded"
PROVIDER_VACANCIES_CHANGED = "provider-vacancies-changed"
PLACEMENT_EVENTS = frozenset({"placement-opened", "placement-started", "placement-ended", "award-collapsed",
                              "placement-reviewed"})
"""The placematch.placement events enrolment takes in (vacancies and the placement part of the score)."""

MAX_REASON_LENGTH = 2000
"""Longest reason for a decision (requests.py refuses longer ones)."""


class ProviderStatus(StrEnum):
    APPLIED = "applied"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class Suspension:
    reason: str
    automatic: bool


class Provider(Aggregate):
    def __init__(self, id: str, policy: QualityPolicy = CURRENT_POLICY) -> None:
        super().__init__(id)
        self.policy = policy
        self.status: ProviderStatus | None = None
        self.profile: Profile | None = None
        self.inspections: list[Inspection] = []
        self.outcomes: list[Outcomes] = []
        self.score: QualityScore | None = None
        self.suspension: Suspension | None = None
        self.rejection_reason: str | None = None
        self.placements: dict[str, PlacementRecord] = {}

    # ----------------------------------------------------------------------------- queries

    @property
    def placements_held(self) -> int:
        return held_places(self.placements.values())

    @property
    def vacancies(self) -> int:
        """Places free now: capacity less the placements awarded or started and not yet ended or
        collapsed (never below 0, even when capacity was lowered under the places held)."""
        capacity = self.profile.capacity if self.profile else 0
        return max(0, capacity - self.placements_held)

    @property
    def exists(self) -> bool:
        return self.status is not None

    @property
    def quality_score(self) -> str | None:
        return format_score(self.score.quality_score) if self.score else None

    @property
    def current_inspection(self) -> Inspection | None:
        return current_inspection(self.inspections)

    @property
    def blocking_reason(self) -> str | None:
        """Why the inspection that counts forbids approval, if it does."""
        inspection = self.current_inspection
        return inspection.blocking_reason() if inspection else None

    # ---------------------------------------------------------------------------- commands

    def submit_application(self, profile: Profile) -> list[NewEvent]:
        """Anyone may apply at any time; the application is checked, not yet accredited."""
        if self.exists:
            raise InvalidTransition(f"provider {self.id} has already applied",
                                    rule="already_applied")
        profile.check()
        return [NewEvent(PROVIDER_APPLIED, profile.to_data())]

    def record_inspection(self, inspection: Inspection, *,
                          today: date | None = None) -> list[NewEvent]:
        """Record a judgement; rescore; suspend an approved provider if the judgement blocks.
        `today`, when given, refuses a judgement dated later."""
        self._require_open("record an inspection for")
        inspection.check(today=today)
        events = [NewEvent(PROVIDER_INSPECTED, inspection.to_data())]
        events += self._rescore([*self.inspections, inspection], self.outcomes)
        counting = current_inspection([*self.inspections, inspection])
        reason = counting.blocking_reason() if counting else None
        if reason and self.status is ProviderStatus.APPROVED:
            events.append(NewEvent(PROVIDER_SUSPENDED, {"reason": reason, "automatic": True}))
        return events

    def record_outcomes(self, outcomes: Outcomes, *,
                        today: date | None = None) -> list[NewEvent]:
        """`today`, when given, refuses an academic year not yet begun."""
        self._require_open("record outcomes for")
        outcomes.check(today=today)
        events = [NewEvent(PROVIDER_OUTCOMES_RECORDED, outcomes.to_data())]
        events += self._rescore(self.inspections, [*self.outcomes, outcomes])
        return events

    def approve(self, reason: str | None = None) -> list[NewEvent]:
        """Accredit an applicant. An approval carries everything matching needs."""
        self._require_exists()
        if self.status is not ProviderStatus.APPLIED:
            raise InvalidTransition(
                f"only an applicant can be approved; provider {self.id} is {self.status}",
                rule=f"cannot_approve_{self.status}")
        blocking = self.blocking_reason
        if blocking:
            raise InvalidTransition(f"approval is blocked: {blocking}", field="inspection",
                                    rule="blocking_inspection")
        return [NewEvent(PROVIDER_APPROVED, self._profile_data(reason=reason))]

    def reject(self, reason: str) -> list[NewEvent]:
        self._require_exists()
        if self.status is not ProviderStatus.APPLIED:
            raise InvalidTransition(
                f"only an applicant can be rejected; provider {self.id} is {self.status}",
                rule=f"cannot_reject_{self.status}")
        return [NewEvent(PROVIDER_REJECTED, {"reason": reason})]

    def suspend(self, reason: str) -> list[NewEvent]:
        """Suspend at once, e.g. for a safeguarding concern; matching stops inviting it."""
        self._require_exists()
        if self.status is not ProviderStatus.APPROVED:
            raise InvalidTransition(
                f"only an approved provider can be suspended; provider {self.id} is "
                f"{self.status}", rule=f"cannot_suspend_{self.status}")
        return [NewEvent(PROVIDER_SUSPENDED, {"reason": reason, "automatic": False})]

    def reinstate(self, reason: str | None = None) -> list[NewEvent]:
        self._require_exists()
        if self.status is not ProviderStatus.SUSPENDED:
            raise InvalidTransition(
                f"only a suspended provider can be reinstated; provider {self.id} is "
                f"{self.status}", rule=f"cannot_reinstate_{self.status}")
        blocking = self.blocking_reason
        if blocking:
            raise InvalidTransition(
                f"reinstatement is blocked until a new inspection: {blocking}",
                field="inspection", rule="blocking_inspection")
        return [NewEvent(PROVIDER_REINSTATED, self._profile_data(reason=reason))]

    def update(self, changes: ProfileChanges) -> list[NewEvent]:
        """Change profile fields; nothing is recorded if nothing actually changes."""
        self._require_open("update")
        if not changes:
            raise RuleViolation("give at least one field to change", rule="non_empty")
        assert self.profile is not None
        profile, effective = self.profile.with_changes(changes)
        if not effective:
            return []
        return [NewEvent(PROVIDER_UPDATED, {"changes": effective, "profile": profile.to_data(),
                                            "quality_score": self.quality_score})]

    def record_placement(self, type: str, placement_id: str, data: Mapping[str, Any],
                         cause_id: str) -> list[NewEvent]:
        """Take in one of the provider's placement events (placematch.placement). Each placement is
        counted once: the record only moves forward, so a redelivered or replayed event, or a
        `placement-started` after the opening, records nothing and takes no second place.
        A provider enrolment never saw (an off-framework one) or one rejected records nothing."""
        if not self.exists or self.status is ProviderStatus.REJECTED or type not in PLACEMENT_EVENTS:
            return []
        existing = self.placements.get(placement_id)
        record = (existing or PlacementRecord(placement_id, "awarded")).after(type, data)
        if record == existing:
            return []
        placements = {**self.placements, placement_id: record}
        events = [NewEvent(PROVIDER_PLACEMENT_RECORDED, {"placement_id": placement_id, "cause": type,
                                                         "cause_id": cause_id, "placement": record.to_data()})]
        held = held_places(placements.values())
        if held != self.placements_held:
            assert self.profile is not None
            events.append(NewEvent(PROVIDER_VACANCIES_CHANGED, {
                "placement_id": placement_id, "cause": type, "capacity": self.profile.capacity,
                "placements_held": held, "vacancies": max(0, self.profile.capacity - held)}))
        events += self._rescore(self.inspections, self.outcomes, placements)
        return events

    # ------------------------------------------------------------------------------ folding

    def apply(self, type: str, data: dict[str, Any]) -> None:
        """Fold a recorded event. Unknown types are ignored (a newer writer's events)."""
        match type:
            case "provider-applied":  # PROVIDER_APPLIED, and so on
                self.profile = Profile.from_data(data)
                self.status = ProviderStatus.APPLIED
            case "provider-inspected":
                self.inspections.append(Inspection.from_data(data))
            case "provider-outcomes-recorded":
                self.outcomes.append(Outcomes.from_data(data))
            case "provider-rescored":
                self.score = QualityScore.from_data(data)
            case "provider-approved":
                self.status = ProviderStatus.APPROVED
            case "provider-rejected":
                self.status = ProviderStatus.REJECTED
                self.rejection_reason = data.get("reason")
            case "provider-suspended":
                self.status = ProviderStatus.SUSPENDED
                self.suspension = Suspension(data["reason"], bool(data.get("automatic")))
            case "provider-reinstated":
                self.status = ProviderStatus.APPROVED
                self.suspension = None
            case "provider-updated":
                self.profile = Profile.from_data(data["profile"])
            case "provider-placement-recorded":
                self.placements[data["placement_id"]] = PlacementRecord.from_data(data["placement"])

    # ------------------------------------------------------------------------------ helpers

    def _rescore(self, inspections: list[Inspection], outcomes: list[Outcomes],
                 placements: Mapping[str, PlacementRecord] | None = None) -> list[NewEvent]:
        """A `provider-rescored` event if the evidence that counts changes the score."""
        inspection = current_inspection(inspections)
        if inspection is None:
            return []
        records = (self.placements if placements is None else placements).values()
        evidence = PlacementOutcomes.of(sorted(records, key=lambda p: p.placement_id)) if records else None
        score = self.policy.score(inspection, current_outcomes(outcomes), evidence)
        if score.same_result(self.score):
            return []
        return [NewEvent(PROVIDER_RESCORED, score.to_data())]

    def _profile_data(self, **extra: Any) -> dict[str, Any]:
        assert self.profile is not None
        held = {"placements_held": self.placements_held} if self.placements else {}
        return {**self.profile.to_data(), "quality_score": self.quality_score, **held, **extra}

    def _require_exists(self) -> None:
        if not self.exists:
            raise NotFound(f"no provider {self.id}")

    def _require_open(self, action: str) -> None:
        self._require_exists()
        if self.status is ProviderStatus.REJECTED:
            raise InvalidTransition(f"cannot {action} a rejected provider",
                                    rule="provider_rejected")

