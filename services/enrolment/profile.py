"""A provider's profile: what it offers, to whom, and where. Pure, no I/O.

A profile arrives typed (`requests.ApplicationIn.to_profile`, `requests.ProviderChanges.to_changes`
have checked every shape, code and bound); here only the rules that need the whole profile are
checked: the age range is the right way up, the registration identity is fixed, a required field
stays. `Profile.from_data` rebuilds a profile from a stored event without re-validating, so that
history always replays even if the rules tighten later.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from shared.errors import RuleViolation
from shared.vocabulary import Gender, Location, NeedCode, PlacementType, ProviderKind

# EHCPs run to age 25; looked-after children from birth.
MIN_AGE, MAX_AGE = 0, 25
MAX_CAPACITY = 10_000
"""Places free at one provider: far above any real school, home or agency, well inside a column."""

REQUIRED_FIELDS: tuple[str, ...] = (
    "name", "urn", "kind", "lots", "age_min", "age_max", "genders", "placement_types",
    "capacity", "contact_email",
)
OPTIONAL_FIELDS: tuple[str, ...] = ("location", "boroughs_served")
PROFILE_FIELDS: tuple[str, ...] = REQUIRED_FIELDS + OPTIONAL_FIELDS
# The registration identity of a provider is fixed at application: a different URN or kind is
# a different provider, and must apply again.
IMMUTABLE_FIELDS: frozenset[str] = frozenset({"urn", "kind"})
UPDATABLE_FIELDS: frozenset[str] = frozenset(PROFILE_FIELDS) - IMMUTABLE_FIELDS
# What a provider may change about itself with its own token; the rest is the commissioner's.
OPERATIONAL_FIELDS: frozenset[str] = frozenset({"capacity", "contact_email"})

ProfileChanges = Mapping[str, Any]
"""Profile fields to change, by name, as typed values (`Profile`'s own types; None to clear), as
`requests.ProviderChanges.to_changes` gives them."""


@dataclass(frozen=True)
class Profile:
    name: str
    urn: str
    kind: ProviderKind
    lots: tuple[NeedCode, ...]
    age_min: int
    age_max: int
    genders: tuple[Gender, ...]
    placement_types: tuple[PlacementType, ...]
    capacity: int
    contact_email: str
    location: Location | None = None
    boroughs_served: tuple[str, ...] = ()

    def check(self) -> None:
        """The rules of a whole new profile."""
        self._check_age_range("age_max")

    def with_changes(self, changes: ProfileChanges) -> tuple[Profile, dict[str, Any]]:
        """Apply a partial update; return the new profile and the changes that really change it.

        A change to the value already held is dropped, so an update that changes nothing
        records nothing.
        """
        for name in changes:
            if name in IMMUTABLE_FIELDS:
                raise RuleViolation(f"{name} cannot be changed; apply again as a new provider",
                                    field=name, rule="immutable")
        for name, value in changes.items():
            if value is None and name in REQUIRED_FIELDS:
                raise RuleViolation(f"{name} cannot be removed", field=name, rule="required")
        effective = {name: value for name, value in changes.items() if getattr(self, name) != value}
        updated = replace(self, **effective)
        updated._check_age_range("age_min" if "age_max" not in effective else "age_max")
        serialised = updated.to_data()
        return updated, {name: serialised[name] for name in effective}

    def _check_age_range(self, field: str) -> None:
        if self.age_min > self.age_max:
            raise RuleViolation(
                f"age range is upside down: age_min {self.age_min} is above age_max "
                f"{self.age_max}", field=field, rule="age_range_order")

    def to_data(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "urn": self.urn,
            "kind": self.kind.value,
            "lots": [lot.value for lot in self.lots],
            "age_min": self.age_min,
            "age_max": self.age_max,
            "genders": [gender.value for gender in self.genders],
            "placement_types": [placement.value for placement in self.placement_types],
            "capacity": self.capacity,
            "location": self.location.to_data(with_district=False) if self.location else None,
            "boroughs_served": list(self.boroughs_served),
            "contact_email": self.contact_email,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Profile:
        return cls(
            name=data["name"], urn=data["urn"], kind=ProviderKind(data["kind"]),
            lots=tuple(NeedCode(lot) for lot in data["lots"]),
            age_min=data["age_min"], age_max=data["age_max"],
            genders=tuple(Gender(gender) for gender in data["genders"]),
            placement_types=tuple(PlacementType(placement) for placement in data["placement_types"]),
            capacity=data["capacity"], contact_email=data["contact_email"],
            location=Location.from_data(data.get("location")),
            boroughs_served=tuple(data.get("boroughs_served") or ()),
        )
