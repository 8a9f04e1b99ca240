"""Provider profile validation: every refusal names the field and the rule."""
from __future__ import annotations

from typing import Any

import pytest

from services.enrolment.profile import Location, Profile
from shared.errors import RuleViolation


def application(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Riverside School", "urn": "100001", "kind": "independent_special_school",
        "lots": ["ASD", "SEMH"], "age_min": 5, "age_max": 19, "genders": ["female", "male"],
        "placement_types": ["day", "residential_38"], "capacity": 4,
        "location": {"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115},
        "boroughs_served": ["croydon", "lambeth"],
        "contact_email": "admissions@riverside.example",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


def refusal(data: dict[str, Any]) -> RuleViolation:
    with pytest.raises(RuleViolation) as caught:
        Profile.parse(data)
    return caught.value


def test_parse_round_trips_through_event_data() -> None:
    profile = Profile.parse(application())
    data = profile.to_data()
    assert data == application()
    assert Profile.from_data(data) == profile


def test_optional_fields_default() -> None:
    profile = Profile.parse(application(location=..., boroughs_served=...))
    assert profile.location is None
    assert profile.boroughs_served == ()
    assert profile.to_data()["location"] is None


def test_codes_are_normalised_and_deduplicated() -> None:
    profile = Profile.parse(application(lots=["asd", "ASD", "semh"], genders=["Male"],
                                        boroughs_served=["Croydon", "croydon"]))
    assert profile.lots == ("ASD", "SEMH")
    assert profile.genders == ("male",)
    assert profile.boroughs_served == ("croydon",)


def test_postcode_is_normalised() -> None:
    assert Location.parse({"postcode": "se17pb"}).postcode == "SE1 7PB"


@pytest.mark.parametrize("field", ["name", "urn", "kind", "lots", "age_min", "age_max",
                                   "genders", "placement_types", "capacity", "contact_email"])
def test_missing_required_field_is_named(field: str) -> None:
    error = refusal(application(**{field: ...}))
    assert (error.field, error.rule) == (field, "required")


@pytest.mark.parametrize(("overrides", "field", "rule"), [
    ({"lots": ["ASD", "XYZ"]}, "lots", "unknown_code"),
    ({"lots": []}, "lots", "non_empty"),
    ({"lots": "ASD"}, "lots", "type"),
    ({"kind": "academy"}, "kind", "unknown_code"),
    ({"genders": ["robot"]}, "genders", "unknown_code"),
    ({"placement_types": ["weekly"]}, "placement_types", "unknown_code"),
    ({"age_min": 12, "age_max": 8}, "age_max", "age_range_order"),
    ({"age_min": -1}, "age_min", "range"),
    ({"age_max": 26}, "age_max", "range"),
    ({"age_min": "5"}, "age_min", "type"),
    ({"age_min": True}, "age_min", "type"),
    ({"capacity": -1}, "capacity", "range"),
    ({"capacity": 2.5}, "capacity", "type"),
    ({"contact_email": "not-an-email"}, "contact_email", "format"),
    ({"name": "   "}, "name", "required"),
    ({"name": "x" * 201}, "name", "max_length"),
    ({"location": {"postcode": "NOWHERE"}}, "location.postcode", "format"),
    ({"location": {"lat": 51.5, "lon": 0.1}}, "location.postcode", "required"),
    ({"location": {"postcode": "SE1 7PB", "lat": 51.5}}, "location.lon", "required"),
    ({"location": {"postcode": "SE1 7PB", "lat": 91, "lon": 0}}, "location.lat", "range"),
    ({"location": {"postcode": "SE1 7PB", "lat": 51, "lon": "x"}}, "location.lon", "type"),
    ({"location": {"postcode": "SE1 7PB", "alt": 3}}, "location.alt", "unknown_field"),
    ({"location": "SE1 7PB"}, "location", "type"),
    ({"boroughs_served": ["Croydon Council!"]}, "boroughs_served", "format"),
    ({"boroughs_served": "croydon"}, "boroughs_served", "type"),
    ({"colour": "blue"}, "colour", "unknown_field"),
])
def test_bad_input_is_refused_naming_field_and_rule(overrides: dict[str, Any], field: str,
                                                     rule: str) -> None:
    error = refusal(application(**overrides))
    assert (error.field, error.rule) == (field, rule)
    assert error.detail


def test_equal_ages_are_a_valid_range() -> None:
    assert Profile.parse(application(age_min=16, age_max=16)).age_max == 16


def test_zero_capacity_is_allowed() -> None:
    assert Profile.parse(application(capacity=0)).capacity == 0


class TestChanges:
    def test_returns_only_effective_changes(self) -> None:
        profile = Profile.parse(application())
        updated, changes = profile.with_changes({"capacity": 6, "name": "Riverside School"})
        assert changes == {"capacity": 6}
        assert updated.capacity == 6

    def test_no_op_changes_nothing(self) -> None:
        profile = Profile.parse(application())
        updated, changes = profile.with_changes({"lots": ["asd", "semh"]})
        assert changes == {}
        assert updated == profile

    def test_changes_are_serialised_like_events(self) -> None:
        profile = Profile.parse(application())
        _, changes = profile.with_changes({"location": {"postcode": "cr01nx"},
                                           "lots": ["SLCN"]})
        assert changes == {"location": {"postcode": "CR0 1NX", "lat": None, "lon": None},
                           "lots": ["SLCN"]}

    def test_location_can_be_cleared(self) -> None:
        profile = Profile.parse(application())
        updated, changes = profile.with_changes({"location": None})
        assert updated.location is None and changes == {"location": None}

    @pytest.mark.parametrize("field", ["urn", "kind"])
    def test_identity_is_immutable(self, field: str) -> None:
        with pytest.raises(RuleViolation) as caught:
            Profile.parse(application()).with_changes({field: "x"})
        assert (caught.value.field, caught.value.rule) == (field, "immutable")

    def test_required_field_cannot_be_removed(self) -> None:
        with pytest.raises(RuleViolation) as caught:
            Profile.parse(application()).with_changes({"capacity": None})
        assert (caught.value.field, caught.value.rule) == ("capacity", "required")

    @pytest.mark.parametrize(("changes", "field"), [
        ({"age_min": 20}, "age_min"),
        ({"age_max": 3}, "age_max"),
        ({"age_min": 15, "age_max": 10}, "age_max"),
    ])
    def test_upside_down_age_range_names_changed_field(self, changes: dict[str, int],
                                                       field: str) -> None:
        with pytest.raises(RuleViolation) as caught:
            Profile.parse(application()).with_changes(changes)
        assert (caught.value.field, caught.value.rule) == (field, "age_range_order")

    def test_negative_capacity_refused(self) -> None:
        with pytest.raises(RuleViolation) as caught:
            Profile.parse(application()).with_changes({"capacity": -2})
        assert (caught.value.field, caught.value.rule) == ("capacity", "range")
