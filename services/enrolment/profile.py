"""A provider's profile: what it offers, to whom, and where. Pure validation, no I/O.

`Profile.parse` checks input from an application or an update and raises `RuleViolation`
naming the offending field; `Profile.from_data` rebuilds a profile from a stored event without
re-validating, so that history always replays even if the rules tighten later.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Mapping

from shared.errors import RuleViolation
from shared.inputs import clean_text

NEED_CODES: tuple[str, ...] = (
    "SPLD", "MLD", "SLD", "PMLD", "SEMH", "SLCN", "HI", "VI", "MSI", "PD", "ASD", "OTH",
)
PLACEMENT_TYPES: tuple[str, ...] = (
    "day", "residential_38", "residential_52", "childrens_home", "foster_care",
)
PROVIDER_KINDS: tuple[str, ...] = (
    "independent_special_school", "non_maintained_special_school", "specialist_college",
    "childrens_home", "fostering_agency",
)
GENDERS: tuple[str, ...] = ("female", "male", "non_binary")
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

_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ?([0-9][A-Z]{2})$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_BOROUGH = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Location:
    postcode: str
    lat: float | None = None
    lon: float | None = None

    @classmethod
    def parse(cls, value: Any, field: str = "location") -> Location:
        if not isinstance(value, Mapping):
            raise RuleViolation("location must be an object with a postcode", field=field,
                                rule="type")
        unknown = set(value) - {"postcode", "lat", "lon"}
        if unknown:
            name = sorted(unknown)[0]
            raise RuleViolation(f"unknown location field {name!r}", field=f"{field}.{name}",
                                rule="unknown_field")
        postcode = value.get("postcode")
        if not isinstance(postcode, str) or not postcode.strip():
            raise RuleViolation("location.postcode is required", field=f"{field}.postcode",
                                rule="required")
        match = _POSTCODE.match(postcode.strip().upper())
        if match is None:
            raise RuleViolation(f"{postcode!r} is not a UK postcode", field=f"{field}.postcode",
                                rule="format")
        lat, lon = value.get("lat"), value.get("lon")
        if (lat is None) != (lon is None):
            missing = "lon" if lon is None else "lat"
            raise RuleViolation("give both lat and lon, or neither", field=f"{field}.{missing}",
                                rule="required")
        if lat is not None:
            lat = _coordinate(lat, -90, 90, f"{field}.lat")
            lon = _coordinate(lon, -180, 180, f"{field}.lon")
        return cls(postcode=f"{match.group(1)} {match.group(2)}", lat=lat, lon=lon)

    def to_data(self) -> dict[str, Any]:
        return {"postcode": self.postcode, "lat": self.lat, "lon": self.lon}

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Location | None:
        if data is None:
            return None
        return cls(postcode=data["postcode"], lat=data.get("lat"), lon=data.get("lon"))


@dataclass(frozen=True)
class Profile:
    name: str
    urn: str
    kind: str
    lots: tuple[str, ...]
    age_min: int
    age_max: int
    genders: tuple[str, ...]
    placement_types: tuple[str, ...]
    capacity: int
    contact_email: str
    location: Location | None = None
    boroughs_served: tuple[str, ...] = ()

    @classmethod
    def parse(cls, application: Mapping[str, Any]) -> Profile:
        """Validate a new application. Every required field must be present."""
        _reject_unknown(application, PROFILE_FIELDS)
        for name in REQUIRED_FIELDS:
            if application.get(name) is None:
                raise RuleViolation(f"{name} is required", field=name, rule="required")
        values = {name: _parse_field(name, application[name])
                  for name in PROFILE_FIELDS if name in application}
        values.setdefault("location", None)
        values.setdefault("boroughs_served", ())
        profile = cls(**values)
        profile._check_age_range("age_max")
        return profile

    def with_changes(self, changes: Mapping[str, Any]) -> tuple[Profile, dict[str, Any]]:
        """Apply a partial update; return the new profile and the changes that really change it.

        A change to the value already held is dropped, so an update that changes nothing
        records nothing.
        """
        _reject_unknown(changes, PROFILE_FIELDS)
        for name in changes:
            if name in IMMUTABLE_FIELDS:
                raise RuleViolation(f"{name} cannot be changed; apply again as a new provider",
                                    field=name, rule="immutable")
        parsed: dict[str, Any] = {}
        for name, value in changes.items():
            if value is None and name in REQUIRED_FIELDS:
                raise RuleViolation(f"{name} cannot be removed", field=name, rule="required")
            parsed[name] = _parse_field(name, value)
        effective = {name: value for name, value in parsed.items()
                     if getattr(self, name) != value}
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
            "kind": self.kind,
            "lots": list(self.lots),
            "age_min": self.age_min,
            "age_max": self.age_max,
            "genders": list(self.genders),
            "placement_types": list(self.placement_types),
            "capacity": self.capacity,
            "location": self.location.to_data() if self.location else None,
            "boroughs_served": list(self.boroughs_served),
            "contact_email": self.contact_email,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Profile:
        return cls(
            name=data["name"], urn=data["urn"], kind=data["kind"], lots=tuple(data["lots"]),
            age_min=data["age_min"], age_max=data["age_max"], genders=tuple(data["genders"]),
            placement_types=tuple(data["placement_types"]), capacity=data["capacity"],
            contact_email=data["contact_email"], location=Location.from_data(data.get("location")),
            boroughs_served=tuple(data.get("boroughs_served") or ()),
        )


def _reject_unknown(values: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise RuleViolation(f"unknown field {unknown[0]!r}", field=unknown[0],
                            rule="unknown_field")


def _parse_field(name: str, value: Any) -> Any:
    match name:
        case "name":
            return _text(value, name, max_length=200)
        case "urn":
            return _text(value, name, max_length=20)
        case "kind":
            return _choice(value, PROVIDER_KINDS, name)
        case "lots":
            return _codes(value, NEED_CODES, name, normalise=str.upper)
        case "genders":
            return _codes(value, GENDERS, name, normalise=str.lower)
        case "placement_types":
            return _codes(value, PLACEMENT_TYPES, name, normalise=str.lower)
        case "age_min" | "age_max":
            return _integer(value, name, MIN_AGE, MAX_AGE)
        case "capacity":
            return _integer(value, name, 0, MAX_CAPACITY)
        case "contact_email":
            email = _text(value, name, max_length=254)
            if not _EMAIL.match(email):
                raise RuleViolation(f"{email!r} is not an email address", field=name,
                                    rule="format")
            return email
        case "location":
            return None if value is None else Location.parse(value)
        case "boroughs_served":
            return _boroughs(value)
    raise AssertionError(name)  # pragma: no cover - guarded by _reject_unknown


def _text(value: Any, field: str, *, max_length: int) -> str:
    if not isinstance(value, str):
        raise RuleViolation(f"{field} must be text", field=field, rule="type")
    text = clean_text(value)
    if not text:
        raise RuleViolation(f"{field} must not be blank (or only invisible characters)", field=field,
                            rule="required")
    if len(text) > max_length:
        raise RuleViolation(f"{field} is longer than {max_length} characters", field=field,
                            rule="max_length")
    return text


def _choice(value: Any, allowed: tuple[str, ...], field: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise RuleViolation(f"{value!r} is not a known {field}; use one of {', '.join(allowed)}",
                            field=field, rule="unknown_code")
    return value


def _codes(value: Any, allowed: tuple[str, ...], field: str, *, normalise: Any) -> tuple[str, ...]:
    """A non-empty list of known codes, normalised in case and de-duplicated, order kept."""
    if not isinstance(value, (list, tuple)):
        raise RuleViolation(f"{field} must be a list", field=field, rule="type")
    if not value:
        raise RuleViolation(f"{field} must name at least one of {', '.join(allowed)}",
                            field=field, rule="non_empty")
    codes: list[str] = []
    for item in value:
        code = normalise(item) if isinstance(item, str) else item
        if code not in allowed:
            raise RuleViolation(f"{item!r} is not a known {field} code; use one of "
                                f"{', '.join(allowed)}", field=field, rule="unknown_code")
        if code not in codes:
            codes.append(code)
    return tuple(codes)


def _integer(value: Any, field: str, low: int, high: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleViolation(f"{field} must be a whole number", field=field, rule="type")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"{low} or more"
        raise RuleViolation(f"{field} must be {bound}, not {value}", field=field, rule="range")
    return value


def _coordinate(value: Any, low: int, high: int, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RuleViolation(f"{field} must be a number", field=field, rule="type")
    if not low <= value <= high:
        raise RuleViolation(f"{field} must be between {low} and {high}", field=field,
                            rule="range")
    return float(value)


def _boroughs(value: Any) -> tuple[str, ...]:
    """Borough codes served; an empty list means every borough of the partnership."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise RuleViolation("boroughs_served must be a list", field="boroughs_served",
                            rule="type")
    boroughs: list[str] = []
    for item in value:
        code = item.strip().lower() if isinstance(item, str) else item
        if not isinstance(code, str) or not _BOROUGH.match(code):
            raise RuleViolation(f"{item!r} is not a borough code (lower case, e.g. 'croydon')",
                                field="boroughs_served", rule="format")
        if code not in boroughs:
            boroughs.append(code)
    return tuple(boroughs)
