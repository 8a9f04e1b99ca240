"""The `Provider` aggregate: a school, college, home or agency enrolling in the DPS.

Lifecycle: applied → approved | rejected; approved → suspended → approved (reinstated).
A rejected provider is finished: it may apply again as a new provider. Commands take typed values
(`requests.py` has checked every shape, code and bound), check the business rules and return the
events to record (never mutating); `apply` folds a recorded event into state. Event `data` follows
shared/EVENTS.md.
"""
from __future__ import annotations

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
    QualityPolicy,
    QualityScore,
    current_inspection,
    current_outcomes,
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

    # ----------------------------------------------------------------------------- queries

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

    # ------------------------------------------------------------------------------ helpers

    def _rescore(self, inspections: list[Inspection],
                 outcomes: list[Outcomes]) -> list[NewEvent]:
        """A `provider-rescored` event if the evidence that counts changes the score."""
        inspection = current_inspection(inspections)
        if inspection is None:
            return []
        score = self.policy.score(inspection, current_outcomes(outcomes))
        if score.same_result(self.score):
            return []
        return [NewEvent(PROVIDER_RESCORED, score.to_data())]

    def _profile_data(self, **extra: Any) -> dict[str, Any]:
        assert self.profile is not None
        return {**self.profile.to_data(), "quality_score": self.quality_score, **extra}

    def _require_exists(self) -> None:
        if not self.exists:
            raise NotFound(f"no provider {self.id}")

    def _require_open(self, action: str) -> None:
        self._require_exists()
        if self.status is ProviderStatus.REJECTED:
            raise InvalidTransition(f"cannot {action} a rejected provider",
                                    rule="provider_rejected")

