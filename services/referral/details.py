"""What a borough says about the child and the placement it needs: `ReferralDetails` and its rules.

The values arrive typed and well-formed (the request models in `api.py` parse them once); what is
checked here are the rules between them and against the clock: no NHS number for a case
reference, no birth in the future, a start date that is plausible and after the birth, an age the
placement can serve, a deadline before the start, coordinates in pairs, distinct secondary needs.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Final
from uuid import UUID

from shared.errors import RuleViolation
from shared.inputs import YEARS_AHEAD, years_ahead
from shared.vocabulary import (
    Gender,
    Location,
    NeedCode,
    PlacementType,
    age_in_years,
    format_instant,
    parse_instant,
)

PERSONAL_FIELDS: Final = ("child_ref", "birth_date")
"""What identifies the child: sealed per referral in the store, erasable on request."""

MAX_CHILD_REF: Final = 64
MAX_AGE_AT_START: Final = 25  # EHCPs run to 25
MAX_TRAVEL_KM: Final = 500
MAX_OUTCOMES: Final = 20
MAX_OUTCOME_LENGTH: Final = 500
MAX_POSTCODE_LENGTH: Final = 10
NEEDS_SCORE_MAX: Final = 3

CHILD_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-_/.]{0,63}$")
"""A pseudonymous case reference: letters, digits and a few separators, no spaces (so no names)."""
_NHS_NUMBER = re.compile(r"^\d{3}[ -]?\d{3}[ -]?\d{4}$")


def violation(field_: str, rule: str, detail: str) -> RuleViolation:
    return RuleViolation(detail, field=field_, rule=rule)


@dataclass(frozen=True)
class ReferralDetails:
    """The `referral` object of EVENTS.md, typed."""

    child_ref: str | None
    """None once erased on request (personal-data-erased)."""
    birth_date: date | None
    gender: Gender
    primary_need: NeedCode
    secondary_needs: tuple[NeedCode, ...]
    placement_type: PlacementType
    required_from: date
    location: Location | None
    max_travel_km: int | None
    needs_profile: Mapping[str, int]
    outcomes: tuple[str, ...]
    offer_deadline: datetime
    preferred_provider_id: UUID | None = None
    erased_age_at_start: int | None = field(default=None, compare=False)
    """After erasure the birth date is gone; the age it gave at the start date is kept."""

    FIELDS: ClassVar[tuple[str, ...]] = (
        "child_ref", "birth_date", "gender", "primary_need", "secondary_needs", "placement_type", "required_from",
        "location", "max_travel_km", "needs_profile", "outcomes", "offer_deadline", "preferred_provider_id",
    )
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"location", "max_travel_km", "preferred_provider_id",
                                                    "secondary_needs"})

    @property
    def age_at_start(self) -> int:
        if self.birth_date is None:
            return self.erased_age_at_start or 0
        return age_in_years(self.birth_date, self.required_from)

    def with_changes(self, changes: Mapping[str, Any]) -> ReferralDetails:
        """A copy with the given fields replaced (an amendment); a required field cannot be cleared."""
        for name, value in changes.items():
            if name not in self.FIELDS:
                raise violation(name, "unknown_field", f"'{name}' is not an amendable referral field")
            if value is None and name not in self.OPTIONAL:
                raise violation(name, "required", f"'{name}' is required")
        values: dict[str, Any] = {name: () if name == "secondary_needs" and value is None else value
                                  for name, value in changes.items()}
        return replace(self, **values)

    def validate(self, now: datetime) -> None:
        """The rules between the fields and against `now`; raises RuleViolation naming the field."""
        today = now.astimezone(UTC).date()
        if self.child_ref is not None and _NHS_NUMBER.match(self.child_ref):  # None once erased
            raise violation(
                "child_ref", "pseudonymous", "'child_ref' looks like an NHS number: send a pseudonymous case reference"
            )
        if self.location is not None and (self.location.lat is None) != (self.location.lon is None):
            missing = "lat" if self.location.lat is None else "lon"
            raise violation(f"location.{missing}", "required", "give both 'lat' and 'lon', or neither")
        if self.birth_date is not None and self.birth_date > today:
            raise violation("birth_date", "not_in_future", "'birth_date' is in the future")
        if len(set(self.secondary_needs)) != len(self.secondary_needs):
            raise violation("secondary_needs", "unique", "'secondary_needs' lists a code twice")
        if self.primary_need in self.secondary_needs:
            raise violation("secondary_needs", "not_primary", "'secondary_needs' must not repeat the primary need")
        if self.required_from < today:
            raise violation("required_from", "not_in_past", "'required_from' is in the past")
        if self.required_from > years_ahead(today):
            raise violation("required_from", "range", f"'required_from' is more than {YEARS_AHEAD} years ahead")
        if self.birth_date is not None and self.required_from < self.birth_date:
            raise violation("required_from", "after_birth", "'required_from' is before 'birth_date'")
        if self.age_at_start > MAX_AGE_AT_START:
            raise violation("birth_date", "age_range", f"the child would be over {MAX_AGE_AT_START} at 'required_from'")
        if self.offer_deadline <= now:
            raise violation("offer_deadline", "in_future", "'offer_deadline' has already passed")
        if self.offer_deadline.date() > self.required_from:
            raise violation(
                "offer_deadline", "before_required_from", "'offer_deadline' must fall on or before 'required_from'"
            )

    def to_data(self, borough: str) -> dict[str, Any]:
        """The `referral` object of EVENTS.md."""
        return {
            "borough": borough,
            "child_ref": self.child_ref,
            "birth_date": self.birth_date.isoformat() if self.birth_date else None,
            "age_at_start": self.age_at_start,
            "gender": self.gender.value,
            "primary_need": self.primary_need.value,
            "secondary_needs": [code.value for code in self.secondary_needs],
            "placement_type": self.placement_type.value,
            "required_from": self.required_from.isoformat(),
            "location": self.location.to_data() if self.location else None,
            "max_travel_km": self.max_travel_km,
            "needs_profile": dict(self.needs_profile),
            "outcomes": list(self.outcomes),
            "offer_deadline": format_instant(self.offer_deadline, "seconds"),
            "preferred_provider_id": str(self.preferred_provider_id) if self.preferred_provider_id else None,
        }

    def field_data(self, name: str) -> Any:
        return self.to_data("")[name]

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ReferralDetails:
        preferred = data.get("preferred_provider_id")
        return cls(
            child_ref=data.get("child_ref"),
            birth_date=date.fromisoformat(data["birth_date"]) if data.get("birth_date") else None,
            erased_age_at_start=data.get("age_at_start"),
            gender=Gender(data["gender"]),
            primary_need=NeedCode(data["primary_need"]),
            secondary_needs=tuple(NeedCode(code) for code in data.get("secondary_needs") or ()),
            placement_type=PlacementType(data["placement_type"]),
            required_from=date.fromisoformat(data["required_from"]),
            location=Location.from_data(data.get("location")),
            max_travel_km=data.get("max_travel_km"),
            needs_profile=dict(data["needs_profile"]),
            outcomes=tuple(data.get("outcomes") or ()),
            offer_deadline=parse_instant(data["offer_deadline"]),
            preferred_provider_id=UUID(preferred) if preferred else None,
        )
