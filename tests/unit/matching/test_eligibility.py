"""Eligibility rules: one test per rule, each failing if that rule is dropped."""
from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from services.matching.eligibility import (
    RULES,
    ProviderFacts,
    ReferralFacts,
    evaluate,
    evaluate_all,
)
from shared.vocabulary import Location, haversine_km

CROYDON = Location(lat=51.372, lon=-0.099, postcode="CR0 1NX")
WATERLOO = Location(lat=51.501, lon=-0.115, postcode="SE1 7PB")
MANCHESTER = Location(lat=53.4808, lon=-2.2426, postcode="M1 1AE")


def provider(**changes: object) -> ProviderFacts:
    base = ProviderFacts(
        provider_id="p-1", status="approved", name="Riverside School", lots=("ASD", "SEMH"),
        age_min=5, age_max=19, genders=("female", "male"), placement_types=("day", "residential_38"),
        capacity=4, location=WATERLOO, boroughs_served=("croydon", "lambeth"),
        contact_email="admissions@riverside.example", quality_score=Decimal("80.00"),
    )
    return replace(base, **changes)


def referral(**changes: object) -> ReferralFacts:
    base = ReferralFacts(
        referral_id="r-1", borough="croydon", age_at_start=12, gender="male", primary_need="ASD",
        placement_type="day", required_from="2026-09-01", location=CROYDON, max_travel_km=Decimal("30"),
    )
    return replace(base, **changes)


def test_baseline_is_eligible_on_every_rule() -> None:
    result = evaluate(provider(), referral())
    assert result.eligible
    assert result.rules == {name: True for name in RULES}
    assert list(result.rules) == ["status", "lot", "age", "gender", "placement_type", "capacity", "distance", "borough"]


@pytest.mark.parametrize("status", ["suspended", "applied", "rejected"])
def test_status_rule_requires_approved(status: str) -> None:
    result = evaluate(provider(status=status), referral())
    assert not result.eligible and result.failed == ["status"]


def test_lot_rule_requires_primary_need_in_lots() -> None:
    result = evaluate(provider(), referral(primary_need="SLCN"))
    assert not result.eligible and result.failed == ["lot"]


def test_lot_rule_ignores_secondary_needs() -> None:
    result = evaluate(provider(lots=("SLCN",)), referral(secondary_needs=("SLCN",)))
    assert result.failed == ["lot"]


@pytest.mark.parametrize("age,ok", [(4, False), (5, True), (19, True), (20, False), (None, False)])
def test_age_rule_uses_age_at_start_inclusive(age: int | None, ok: bool) -> None:
    result = evaluate(provider(), referral(age_at_start=age))
    assert result.eligible is ok
    assert result.rules["age"] is ok


def test_gender_rule() -> None:
    result = evaluate(provider(genders=("female",)), referral(gender="male"))
    assert result.failed == ["gender"]


def test_placement_type_rule() -> None:
    result = evaluate(provider(), referral(placement_type="residential_52"))
    assert result.failed == ["placement_type"]


def test_capacity_rule_needs_a_free_place() -> None:
    assert evaluate(provider(capacity=0), referral()).failed == ["capacity"]
    assert evaluate(provider(capacity=1), referral()).eligible


def test_distance_rule_excludes_providers_beyond_max_travel() -> None:
    result = evaluate(provider(location=MANCHESTER), referral())
    assert result.failed == ["distance"]
    assert result.distance_km is not None and result.distance_km > Decimal(250)


def test_distance_rule_passes_when_limit_or_location_unknown() -> None:
    far = provider(location=MANCHESTER)
    assert evaluate(far, referral(max_travel_km=None)).eligible
    assert evaluate(far, referral(location=None)).eligible
    assert evaluate(provider(location=None), referral()).eligible
    assert evaluate(provider(location=Location(postcode="M1 1AE")), referral()).eligible


def test_distance_rule_boundary_is_inclusive() -> None:
    km = haversine_km(CROYDON.lat, CROYDON.lon, WATERLOO.lat, WATERLOO.lon)  # type: ignore[arg-type]
    assert evaluate(provider(), referral(max_travel_km=km)).rules["distance"]
    assert not evaluate(provider(), referral(max_travel_km=km - Decimal("0.01"))).rules["distance"]


def test_borough_rule() -> None:
    assert evaluate(provider(boroughs_served=("lambeth",)), referral()).failed == ["borough"]


def test_empty_boroughs_served_means_every_borough() -> None:
    assert evaluate(provider(boroughs_served=()), referral(borough="sutton")).eligible


def test_all_rules_evaluated_without_short_circuit() -> None:
    result = evaluate(provider(status="suspended", capacity=0, lots=()), referral())
    assert result.failed == ["status", "lot", "capacity"]


def test_haversine_known_distances() -> None:
    assert haversine_km(0, 0, 0, 0) == Decimal("0.00")
    # one degree of latitude along a meridian ~ 111.2 km
    assert haversine_km(0, 0, 1, 0) == Decimal("111.20")
    # Croydon to Manchester is about 276 km as the crow flies
    km = haversine_km(51.372, -0.099, 53.4808, -2.2426)
    assert Decimal(270) < km < Decimal(280)
    assert km == haversine_km(53.4808, -2.2426, 51.372, -0.099)
    assert km.as_tuple().exponent == -2


def test_evaluate_all_is_sorted_by_provider_id() -> None:
    results = evaluate_all([provider(provider_id="b"), provider(provider_id="a")], referral())
    assert [r.provider_id for r in results] == ["a", "b"]


def test_from_profile_and_from_referral_parse_event_data() -> None:
    p = ProviderFacts.from_profile("p-9", "approved", {
        "name": "Oak", "urn": "1", "kind": "childrens_home", "lots": ["SEMH"], "age_min": 8, "age_max": 17,
        "genders": ["female"], "placement_types": ["childrens_home"], "capacity": 2,
        "location": {"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115}, "boroughs_served": [],
        "contact_email": "a@b.example"}, "72.5")
    assert p.quality_score == Decimal("72.50") and p.location and p.location.known
    r = ReferralFacts.from_referral("r-9", {
        "borough": "lambeth", "child_ref": "CR-1", "birth_date": "2012-01-01", "age_at_start": 14,
        "gender": "female", "primary_need": "SEMH", "secondary_needs": [], "placement_type": "childrens_home",
        "required_from": "2026-09-01", "location": {"postcode": "SE11 5QY", "lat": 51.49, "lon": -0.11,
            "district": "SE11"},
        "max_travel_km": 20, "needs_profile": {"voice": 2}, "outcomes": [], "offer_deadline": "2026-07-01T17:00:00Z",
        "preferred_provider_id": None, "raised_at": "2026-05-01T09:00:00Z"})
    assert evaluate(p, r).eligible
    summary = r.redacted_summary()
    assert "child_ref" not in summary and "birth_date" not in summary
    assert summary["district"] == "SE11" and "lat" not in str(summary)
