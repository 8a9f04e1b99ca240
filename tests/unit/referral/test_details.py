"""The child's details: the rules between the fields and against the clock, and their event form."""
from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import pytest

from services.referral.details import ReferralDetails
from shared.errors import RuleViolation
from shared.vocabulary import Location, NeedCode

from .factories import NOW, PROVIDER_B, details


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"child_ref": "9434765919"}, "child_ref", "pseudonymous"),
        ({"birth_date": date(2027, 1, 1)}, "birth_date", "not_in_future"),
        ({"birth_date": date(1990, 1, 1)}, "birth_date", "age_range"),
        ({"secondary_needs": (NeedCode.SLCN, NeedCode.SLCN)}, "secondary_needs", "unique"),
        ({"secondary_needs": (NeedCode.ASD,)}, "secondary_needs", "not_primary"),
        ({"required_from": date(2026, 5, 1)}, "required_from", "not_in_past"),
        ({"required_from": date(2031, 6, 2)}, "required_from", "range"),
        ({"location": Location(postcode="CR0 1NX", lat=51.3)}, "location.lon", "required"),
        ({"location": Location(postcode="CR0 1NX", lon=0.1)}, "location.lat", "required"),
        ({"offer_deadline": datetime(2026, 5, 1, 17, tzinfo=UTC)}, "offer_deadline", "in_future"),
        ({"offer_deadline": datetime(2026, 9, 2, 17, tzinfo=UTC)}, "offer_deadline", "before_required_from"),
    ],
)
def test_rules_name_the_field(changes: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(RuleViolation) as excinfo:
        details(**changes).validate(NOW)
    assert (excinfo.value.status, excinfo.value.field, excinfo.value.rule) == (422, field, rule)


def test_valid_details_pass_and_the_age_is_at_the_start() -> None:
    details().validate(NOW)
    assert details().age_at_start == 12
    assert details(required_from=date(2027, 5, 2)).age_at_start == 13
    details(location=None, max_travel_km=None, secondary_needs=()).validate(NOW)


def test_event_form_round_trips_and_is_plain_json() -> None:
    original = details(preferred_provider_id=UUID(PROVIDER_B))
    data = original.to_data("croydon")
    assert ReferralDetails.from_data(data) == original
    assert data["gender"] == "male" and type(data["gender"]) is str and type(data["primary_need"]) is str
    assert data["secondary_needs"] == ["SLCN"] and data["preferred_provider_id"] == PROVIDER_B
    assert data["location"] == {"postcode": "CR0 1NX", "lat": 51.372, "lon": -0.099, "district": "CR0"}
    assert data["offer_deadline"] == "2026-07-01T17:00:00Z"


def test_changes_replace_fields_and_a_required_one_cannot_be_cleared() -> None:
    assert details().with_changes({"max_travel_km": None}).max_travel_km is None
    assert details().with_changes({"secondary_needs": None}).secondary_needs == ()
    for name in ("child_ref", "birth_date", "gender", "outcomes", "offer_deadline"):
        with pytest.raises(RuleViolation) as excinfo:
            details().with_changes({name: None})
        assert (excinfo.value.field, excinfo.value.rule) == (name, "required")
