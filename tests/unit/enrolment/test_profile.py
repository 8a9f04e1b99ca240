"""The profile's own rules (age range order, fixed identity, required fields stay) and its event data."""
from __future__ import annotations

from typing import Any

import pytest

from services.enrolment.profile import Profile
from services.enrolment.requests import ApplicationIn, ProviderChanges
from shared.errors import RuleViolation
from tests.unit.enrolment.test_api import application


def profile(**overrides: Any) -> Profile:
    return ApplicationIn.model_validate(application(**overrides)).to_profile()


def changes(body: dict[str, Any]) -> dict[str, Any]:
    return dict(ProviderChanges.model_validate(body).to_changes())


def test_round_trips_through_event_data() -> None:
    data = profile().to_data()
    assert data == application()
    assert Profile.from_data(data) == profile()


def test_no_location_is_null_in_event_data() -> None:
    assert profile(location=...).to_data()["location"] is None


def test_upside_down_age_range_is_refused() -> None:
    with pytest.raises(RuleViolation) as caught:
        profile(age_min=12, age_max=8).check()
    assert (caught.value.field, caught.value.rule) == ("age_max", "age_range_order")


@pytest.mark.parametrize("overrides", [{"age_min": 16, "age_max": 16}, {"capacity": 0}])
def test_edges_are_valid(overrides: dict[str, Any]) -> None:
    profile(**overrides).check()


class TestChanges:
    def test_returns_only_effective_changes(self) -> None:
        updated, effective = profile().with_changes(changes({"capacity": 6, "name": "Riverside School"}))
        assert effective == {"capacity": 6}
        assert updated.capacity == 6

    def test_no_op_changes_nothing(self) -> None:
        updated, effective = profile().with_changes(changes({"lots": ["asd", "semh"]}))
        assert effective == {}
        assert updated == profile()

    def test_changes_are_serialised_like_events(self) -> None:
        _, effective = profile().with_changes(changes({"location": {"postcode": "cr01nx"}, "lots": ["SLCN"]}))
        assert effective == {"location": {"postcode": "CR0 1NX", "lat": None, "lon": None}, "lots": ["SLCN"]}

    def test_location_and_boroughs_can_be_cleared(self) -> None:
        updated, effective = profile().with_changes(changes({"location": None, "boroughs_served": None}))
        assert updated.location is None and updated.boroughs_served == ()
        assert effective == {"location": None, "boroughs_served": []}

    @pytest.mark.parametrize("field", ["urn", "kind"])
    def test_identity_is_immutable(self, field: str) -> None:
        with pytest.raises(RuleViolation) as caught:
            profile().with_changes(changes({field: "x"}))
        assert (caught.value.field, caught.value.rule) == (field, "immutable")

    @pytest.mark.parametrize("field", ["capacity", "name", "lots"])
    def test_required_field_cannot_be_removed(self, field: str) -> None:
        with pytest.raises(RuleViolation) as caught:
            profile().with_changes(changes({field: None}))
        assert (caught.value.field, caught.value.rule) == (field, "required")

    @pytest.mark.parametrize(("body", "field"), [
        ({"age_min": 20}, "age_min"),
        ({"age_max": 3}, "age_max"),
        ({"age_min": 15, "age_max": 10}, "age_max"),
    ])
    def test_upside_down_age_range_names_changed_field(self, body: dict[str, int], field: str) -> None:
        with pytest.raises(RuleViolation) as caught:
            profile().with_changes(changes(body))
        assert (caught.value.field, caught.value.rule) == (field, "age_range_order")
