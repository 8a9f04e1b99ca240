"""Eligibility: which providers may be invited to a referral (DESIGN.md, "The flow" step 3).

Pure functions over plain facts. Each rule is a named predicate so that a `referral-matched`
decision can say, for every provider, which rules passed and which did not.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shared.vocabulary import Location, format_score, parse_score


def provider_location(location: Location | None) -> dict[str, Any] | None:
    """A provider's location as audit records have always shown it: providers' locations carry no
    district on the wire (shared/EVENTS.md), so `district` is null, not derived."""
    return None if location is None else {**location.to_data(with_district=False), "district": None}


@dataclass(frozen=True)
class ProviderFacts:
    """What matching knows about a provider, built only from enrolment events."""

    provider_id: str
    status: str
    name: str = ""
    lots: tuple[str, ...] = ()
    age_min: int = 0
    age_max: int = 0
    genders: tuple[str, ...] = ()
    placement_types: tuple[str, ...] = ()
    capacity: int = 0
    location: Location | None = None
    boroughs_served: tuple[str, ...] = ()
    contact_email: str | None = None
    quality_score: Decimal | None = None
    placements_held: int | None = None
    """Places taken by its placements (enrolment's `provider-vacancies-changed`); None in logs from
    before live capacity, where eligibility judges by capacity alone."""

    @property
    def vacancies(self) -> int:
        """Free places: capacity less the places held (capacity itself when nothing was reported)."""
        return self.capacity if self.placements_held is None else max(0, self.capacity - self.placements_held)

    @classmethod
    def from_profile(
        cls, provider_id: str, status: str, profile: Mapping[str, Any], quality_score: Any = None,
        placements_held: int | None = None,
    ) -> ProviderFacts:
        return cls(
            placements_held=placements_held,
            provider_id=provider_id,
            status=status,
            name=str(profile.get("name") or ""),
            lots=tuple(profile.get("lots") or ()),
            age_min=int(profile.get("age_min") or 0),
            age_max=int(profile.get("age_max") or 0),
            genders=tuple(profile.get("genders") or ()),
            placement_types=tuple(profile.get("placement_types") or ()),
            capacity=int(profile.get("capacity") or 0),
            location=Location.from_data(profile.get("location")),
            boroughs_served=tuple(profile.get("boroughs_served") or ()),
            contact_email=profile.get("contact_email"),
            quality_score=parse_score(quality_score),
        )

    def as_dict(self) -> dict[str, Any]:
        """The facts as seen, for audit records and read APIs (JSON-ready, deterministic). `vacancies`
        and `placements_held` only once enrolment reported them, so old logs replay to the same bytes."""
        held = {} if self.placements_held is None else {"placements_held": self.placements_held,
                                                         "vacancies": self.vacancies}
        return {**held,
            "provider_id": self.provider_id,
            "status": self.status,
            "name": self.name,
            "lots": list(self.lots),
            "age_min": self.age_min,
            "age_max": self.age_max,
            "genders": list(self.genders),
            "placement_types": list(self.placement_types),
            "capacity": self.capacity,
            "location": provider_location(self.location),
            "boroughs_served": list(self.boroughs_served),
            "quality_score": format_score(self.quality_score),
        }


@dataclass(frozen=True)
class ReferralFacts:
    """The parts of a referral matching uses; never `child_ref` or `birth_date`."""

    referral_id: str
    borough: str
    age_at_start: int | None
    gender: str
    primary_need: str
    placement_type: str
    required_from: str = ""
    location: Location | None = None
    max_travel_km: Decimal | None = None
    secondary_needs: tuple[str, ...] = ()
    needs_profile: Mapping[str, int] = field(default_factory=dict)
    outcomes: tuple[str, ...] = ()
    offer_deadline: str | None = None
    preferred_provider_id: str | None = None
    raised_at: str | None = None

    @classmethod
    def from_referral(
        cls, referral_id: str, data: Mapping[str, Any], raised_at: str | None = None
    ) -> ReferralFacts:
        max_km = data.get("max_travel_km")
        age = data.get("age_at_start")
        return cls(
            referral_id=referral_id,
            borough=str(data.get("borough") or ""),
            age_at_start=None if age is None else int(age),
            gender=str(data.get("gender") or ""),
            primary_need=str(data.get("primary_need") or ""),
            placement_type=str(data.get("placement_type") or ""),
            required_from=str(data.get("required_from") or ""),
            location=Location.from_data(data.get("location")),
            max_travel_km=None if max_km is None else Decimal(str(max_km)),
            secondary_needs=tuple(data.get("secondary_needs") or ()),
            needs_profile=dict(data.get("needs_profile") or {}),
            outcomes=tuple(data.get("outcomes") or ()),
            offer_deadline=data.get("offer_deadline"),
            preferred_provider_id=data.get("preferred_provider_id"),
            raised_at=raised_at if raised_at is not None else data.get("raised_at"),
        )

    def redacted_summary(self) -> dict[str, Any]:
        """What an invited provider may see: age in years, location to district, no identity."""
        return {
            "referral_id": self.referral_id,
            "borough": self.borough,
            "age_at_start": self.age_at_start,
            "gender": self.gender,
            "primary_need": self.primary_need,
            "secondary_needs": list(self.secondary_needs),
            "placement_type": self.placement_type,
            "required_from": self.required_from,
            "district": self.location.district if self.location else None,
            "max_travel_km": None if self.max_travel_km is None else str(self.max_travel_km),
            "needs_profile": dict(sorted(self.needs_profile.items())),
            "outcomes": list(self.outcomes),
            "offer_deadline": self.offer_deadline,
        }


def distance_km(provider: ProviderFacts, referral: ReferralFacts) -> Decimal | None:
    """Distance between provider and child's location, or None when either is unknown."""
    if provider.location is None or referral.location is None:
        return None
    return provider.location.km_to(referral.location)


def _status(p: ProviderFacts, r: ReferralFacts) -> bool:
    return p.status == "approved"


def _lot(p: ProviderFacts, r: ReferralFacts) -> bool:
    return r.primary_need in p.lots


def _age(p: ProviderFacts, r: ReferralFacts) -> bool:
    return r.age_at_start is not None and p.age_min <= r.age_at_start <= p.age_max


def _gender(p: ProviderFacts, r: ReferralFacts) -> bool:
    return r.gender in p.genders


def _placement_type(p: ProviderFacts, r: ReferralFacts) -> bool:
    return r.placement_type in p.placement_types


def _capacity(p: ProviderFacts, r: ReferralFacts) -> bool:
    """A free place now (issue 16: vacancies, i.e. capacity less the places its placements hold)."""
    return p.vacancies > 0


def _distance(p: ProviderFacts, r: ReferralFacts) -> bool:
    """Passes when the distance cannot be known or no limit was set (DESIGN.md step 3)."""
    if r.max_travel_km is None:
        return True
    km = distance_km(p, r)
    return km is None or km <= r.max_travel_km


def _borough(p: ProviderFacts, r: ReferralFacts) -> bool:
    """An empty `boroughs_served` means every borough of the partnership."""
    return not p.boroughs_served or r.borough in p.boroughs_served


Rule = Callable[[ProviderFacts, ReferralFacts], bool]

RULES: dict[str, Rule] = {
    "status": _status,
    "lot": _lot,
    "age": _age,
    "gender": _gender,
    "placement_type": _placement_type,
    "capacity": _capacity,
    "distance": _distance,
    "borough": _borough,
}


@dataclass(frozen=True)
class Eligibility:
    provider_id: str
    rules: dict[str, bool]
    distance_km: Decimal | None = None

    @property
    def eligible(self) -> bool:
        return all(self.rules.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, passed in self.rules.items() if not passed]

    def as_result(self) -> dict[str, Any]:
        """The `results[]` entry of `referral-matched` (shared/EVENTS.md)."""
        return {"provider_id": self.provider_id, "eligible": self.eligible, "rules": dict(self.rules)}


def evaluate(provider: ProviderFacts, referral: ReferralFacts) -> Eligibility:
    """Every rule is evaluated (no short-circuit) so the decision explains itself fully."""
    return Eligibility(
        provider_id=provider.provider_id,
        rules={name: rule(provider, referral) for name, rule in RULES.items()},
        distance_km=distance_km(provider, referral),
    )


def evaluate_all(providers: Mapping[str, ProviderFacts] | list[ProviderFacts],
                 referral: ReferralFacts) -> list[Eligibility]:
    """Results sorted by provider id, so the same directory always gives the same list."""
    items = providers.values() if isinstance(providers, Mapping) else providers
    return [evaluate(p, referral) for p in sorted(items, key=lambda p: p.provider_id)]
