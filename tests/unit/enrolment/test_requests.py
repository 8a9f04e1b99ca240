"""Enrolment's request models: every shape, code and bound refused once, naming the field and the rule
the API answers with (422 problem+json); what they accept arrives in the domain typed."""
from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from services.enrolment.requests import (
    ApplicationIn,
    InspectionIn,
    OutcomesIn,
    ProviderChanges,
    ReasonIn,
    RequiredReasonIn,
)
from services.enrolment.scoring import Framework, LegacyGrade, ReportCardGrade, Safeguarding
from shared.vocabulary import Gender, Location, NeedCode, PlacementType, ProviderKind
from shared.web import rule_of
from tests.unit.enrolment.test_api import CARD, GOOD, application


def refusal(model: type[BaseModel], data: Any) -> tuple[str, str]:
    """(field, rule) of the first error, as the API names them (shared/web.py; FastAPI validates a body
    `from_attributes`)."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data, from_attributes=True)
    error = caught.value.errors()[0]
    assert error["msg"]
    return ".".join(str(part) for part in error["loc"]), rule_of(error)


class TestApplication:
    def test_typed_profile(self) -> None:
        profile = ApplicationIn.model_validate(application()).to_profile()
        assert profile.kind is ProviderKind.INDEPENDENT_SPECIAL_SCHOOL
        assert profile.lots == (NeedCode.ASD, NeedCode.SEMH)
        assert profile.genders == (Gender.FEMALE, Gender.MALE)
        assert profile.placement_types == (PlacementType.DAY, PlacementType.RESIDENTIAL_38)
        assert profile.location == Location("SE1 7PB", 51.501, -0.115)
        assert profile.to_data() == application()

    def test_optional_fields_default(self) -> None:
        profile = ApplicationIn.model_validate(application(location=..., boroughs_served=...)).to_profile()
        assert profile.location is None and profile.boroughs_served == ()

    def test_codes_are_normalised_and_deduplicated(self) -> None:
        profile = ApplicationIn.model_validate(application(
            lots=["asd", "ASD", "semh"], genders=["Male"], boroughs_served=["Croydon", "croydon"])).to_profile()
        assert profile.lots == (NeedCode.ASD, NeedCode.SEMH)
        assert profile.genders == (Gender.MALE,)
        assert profile.boroughs_served == ("croydon",)

    @pytest.mark.parametrize("postcode", ["se17pb", " se1 7pb ", "SE1 7PB"])
    def test_postcode_is_normalised(self, postcode: str) -> None:
        profile = ApplicationIn.model_validate(application(location={"postcode": postcode})).to_profile()
        assert profile.location == Location("SE1 7PB", None, None)

    def test_text_is_cleaned(self) -> None:
        profile = ApplicationIn.model_validate(application(name=" Riverside\u200b ", urn=" 100002 ")).to_profile()
        assert (profile.name, profile.urn) == ("Riverside", "100002")

    @pytest.mark.parametrize("field", ["name", "urn", "kind", "lots", "age_min", "age_max",
                                       "genders", "placement_types", "capacity", "contact_email"])
    def test_missing_required_field_is_named(self, field: str) -> None:
        assert refusal(ApplicationIn, application(**{field: ...})) == (field, "missing")

    @pytest.mark.parametrize(("overrides", "field", "rule"), [
        ({"lots": ["ASD", "XYZ"]}, "lots", "unknown_code"),
        ({"lots": []}, "lots", "non_empty"),
        ({"lots": "ASD"}, "lots", "list_type"),
        ({"lots": ["ASD", 5]}, "lots.1", "string_type"),
        ({"kind": "academy"}, "kind", "unknown_code"),
        ({"kind": "ACADEMY"}, "kind", "unknown_code"),
        ({"kind": 5}, "kind", "string_type"),
        ({"genders": ["robot"]}, "genders", "unknown_code"),
        ({"placement_types": ["weekly"]}, "placement_types", "unknown_code"),
        ({"age_min": -1}, "age_min", "range"),
        ({"age_max": 26}, "age_max", "range"),
        ({"age_min": "5"}, "age_min", "int_type"),
        ({"age_min": True}, "age_min", "int_type"),
        ({"capacity": -1}, "capacity", "range"),
        ({"capacity": 10_001}, "capacity", "range"),
        ({"capacity": 2.5}, "capacity", "int_type"),
        ({"contact_email": "not-an-email"}, "contact_email", "format"),
        ({"name": "   "}, "name", "required"),
        ({"name": "\u200b"}, "name", "required"),
        ({"name": "x" * 201}, "name", "max_length"),
        ({"name": None}, "name", "string_type"),
        ({"urn": "x" * 21}, "urn", "max_length"),
        ({"location": {"postcode": "NOWHERE"}}, "location.postcode", "format"),
        ({"location": {"postcode": "SE1  7PB"}}, "location.postcode", "format"),
        ({"location": {"postcode": "  "}}, "location.postcode", "required"),
        ({"location": {"lat": 51.5, "lon": 0.1}}, "location.postcode", "missing"),
        ({"location": {"postcode": "SE1 7PB", "lat": 51.5}}, "location.lon", "required"),
        ({"location": {"postcode": "SE1 7PB", "lon": 0.5}}, "location.lat", "required"),
        ({"location": {"postcode": "SE1 7PB", "lat": 91, "lon": 0}}, "location.lat", "range"),
        ({"location": {"postcode": "SE1 7PB", "lat": 1, "lon": -181}}, "location.lon", "range"),
        ({"location": {"postcode": "SE1 7PB", "lat": 51, "lon": "x"}}, "location.lon", "float_parsing"),
        ({"location": {"postcode": "SE1 7PB", "alt": 3}}, "location.alt", "extra_forbidden"),
        ({"location": "SE1 7PB"}, "location", "model_attributes_type"),
        ({"boroughs_served": ["Croydon Council!"]}, "boroughs_served", "format"),
        ({"boroughs_served": "croydon"}, "boroughs_served", "list_type"),
        ({"colour": "blue"}, "colour", "extra_forbidden"),
    ])
    def test_bad_input_is_refused_naming_field_and_rule(self, overrides: dict[str, Any], field: str,
                                                         rule: str) -> None:
        assert refusal(ApplicationIn, application(**overrides)) == (field, rule)

    def test_the_age_range_order_is_the_domains(self) -> None:
        """A business rule over the whole profile: the model passes it on."""
        assert ApplicationIn.model_validate(application(age_min=16, age_max=11)).to_profile().age_min == 16


class TestChanges:
    def test_only_given_fields_typed(self) -> None:
        changes = ProviderChanges.model_validate({"lots": ["slcn"], "location": {"postcode": "cr01nx"},
                                                  "capacity": 3}).to_changes()
        assert changes == {"lots": (NeedCode.SLCN,), "location": Location("CR0 1NX"), "capacity": 3}

    def test_nulls_clear(self) -> None:
        changes = ProviderChanges.model_validate({"location": None, "boroughs_served": None,
                                                  "capacity": None}).to_changes()
        assert changes == {"location": None, "boroughs_served": (), "capacity": None}

    def test_identity_passes_to_the_domain(self) -> None:
        """`urn` and `kind` are refused as immutable by the domain, whatever their value."""
        assert ProviderChanges.model_validate({"urn": "999999", "kind": None}).to_changes() == \
            {"urn": "999999", "kind": None}

    @pytest.mark.parametrize(("body", "field", "rule"), [
        ({"capacity": -1}, "capacity", "range"),
        ({"age_min": 30}, "age_min", "range"),
        ({"lots": ["ASD", "NOPE"]}, "lots", "unknown_code"),
        ({"status": "approved"}, "status", "extra_forbidden"),
        ({"contact_email": "nobody"}, "contact_email", "format"),
        ({"location": {}}, "location.postcode", "missing"),
    ])
    def test_bad_changes(self, body: dict[str, Any], field: str, rule: str) -> None:
        assert refusal(ProviderChanges, body) == (field, rule)


class TestInspection:
    def test_typed_inspection(self) -> None:
        inspection = InspectionIn.model_validate(CARD).to_inspection()
        assert inspection.framework is Framework.OFSTED_REPORT_CARD
        assert inspection.inspected_on == date(2026, 1, 20)
        assert inspection.safeguarding is Safeguarding.MET
        assert inspection.areas["leadership"] is ReportCardGrade.STRONG
        assert inspection.to_data() == CARD
        legacy = InspectionIn.model_validate(GOOD).to_inspection()
        assert legacy.overall is LegacyGrade.GOOD and legacy.to_data() == GOOD

    def test_null_fields_count_as_not_given(self) -> None:
        inspection = InspectionIn.model_validate({**GOOD, "areas": None, "safeguarding": None}).to_inspection()
        assert inspection.to_data() == GOOD

    @pytest.mark.parametrize(("payload", "field", "rule"), [
        ({"overall": "good", "inspected_on": "2024-03-01"}, "framework", "missing"),
        ({**GOOD, "framework": "estyn"}, "framework", "unknown_code"),
        ({**GOOD, "framework": None}, "framework", "string_type"),
        ({"framework": "ofsted_legacy", "inspected_on": "2024-03-01"}, "overall", "required"),
        ({**GOOD, "overall": None}, "overall", "required"),
        ({**GOOD, "overall": "great"}, "overall", "unknown_code"),
        ({"framework": "ofsted_legacy", "overall": "good"}, "inspected_on", "missing"),
        ({**GOOD, "inspected_on": "1 March"}, "inspected_on", "format"),
        ({**GOOD, "inspected_on": None}, "inspected_on", "string_type"),
        ({**GOOD, "inspected_on": 20240301}, "inspected_on", "string_type"),
        ({**GOOD, "areas": {"leadership": "strong"}}, "areas", "not_allowed_for_framework"),
        ({**GOOD, "areas": {}}, "areas", "not_allowed_for_framework"),
        ({**GOOD, "safeguarding": "yes"}, "safeguarding", "unknown_code"),
        ({**CARD, "safeguarding": None}, "safeguarding", "required"),
        ({**CARD, "safeguarding": "yes"}, "safeguarding", "unknown_code"),
        ({k: v for k, v in CARD.items() if k != "areas"}, "areas", "required"),
        ({**CARD, "areas": {}}, "areas", "non_empty"),
        ({**CARD, "areas": ["strong"]}, "areas", "dict_type"),
        ({**CARD, "areas": {"leadership": "good"}}, "areas.leadership", "unknown_code"),
        ({**CARD, "areas": {"leadership": 5}}, "areas.leadership", "string_type"),
        ({**CARD, "areas": {"Leadership!": "strong"}}, "areas.Leadership!", "format"),
        ({**CARD, "overall": "good"}, "overall", "not_allowed_for_framework"),
        ({**CARD, "extra": 1}, "extra", "extra_forbidden"),
    ])
    def test_refusals(self, payload: dict[str, Any], field: str, rule: str) -> None:
        assert refusal(InspectionIn, payload) == (field, rule)


class TestOutcomes:
    def test_typed_outcomes(self) -> None:
        outcomes = OutcomesIn.model_validate({"period": "2099-00", "kpis": {"a": 1}}).to_outcomes()
        assert outcomes.period == "2099-00" and dict(outcomes.kpis) == {"a": 1}

    @pytest.mark.parametrize(("payload", "field", "rule"), [
        ({"kpis": {"attendance": 90}}, "period", "missing"),
        ({"period": "2025", "kpis": {"attendance": 90}}, "period", "academic_year"),
        ({"period": "2025-27", "kpis": {"attendance": 90}}, "period", "academic_year"),
        ({"period": 2025, "kpis": {"a": 1}}, "period", "string_type"),
        ({"period": "2025-26"}, "kpis", "missing"),
        ({"period": "2025-26", "kpis": None}, "kpis", "dict_type"),
        ({"period": "2025-26", "kpis": {}}, "kpis", "non_empty"),
        ({"period": "2025-26", "kpis": [90]}, "kpis", "dict_type"),
        ({"period": "2025-26", "kpis": {"attendance": 101}}, "kpis.attendance", "range"),
        ({"period": "2025-26", "kpis": {"attendance": -1}}, "kpis.attendance", "range"),
        ({"period": "2025-26", "kpis": {"attendance": "90"}}, "kpis.attendance", "int_type"),
        ({"period": "2025-26", "kpis": {"attendance": 90.5}}, "kpis.attendance", "int_type"),
        ({"period": "2025-26", "kpis": {"attendance": True}}, "kpis.attendance", "int_type"),
        ({"period": "2025-26", "kpis": {"Attendance %": 90}}, "kpis.Attendance %", "format"),
        ({"period": "2025-26", "kpis": {"a": 1}, "note": "x"}, "note", "extra_forbidden"),
    ])
    def test_refusals(self, payload: dict[str, Any], field: str, rule: str) -> None:
        assert refusal(OutcomesIn, payload) == (field, rule)


class TestReasons:
    def test_required_reason_is_cleaned(self) -> None:
        assert RequiredReasonIn.model_validate({"reason": "  Insurance certificate missing "}).reason == \
            "Insurance certificate missing"

    @pytest.mark.parametrize(("body", "rule"), [
        ({}, "missing"), ({"reason": None}, "string_type"), ({"reason": ""}, "required"),
        ({"reason": "   "}, "required"), ({"reason": "\u200b\u200d"}, "required"), ({"reason": 42}, "string_type"),
        ({"reason": "x" * 2001}, "max_length"),
    ])
    def test_required_reason_refusals(self, body: dict[str, Any], rule: str) -> None:
        assert refusal(RequiredReasonIn, body) == ("reason", rule)

    @pytest.mark.parametrize(("reason", "kept"), [(None, None), ("", None), (" \u200b ", None), (" ok ", "ok")])
    def test_optional_reason(self, reason: str | None, kept: str | None) -> None:
        assert ReasonIn.model_validate({"reason": reason}).reason == kept

    def test_optional_reason_is_bounded(self) -> None:
        assert refusal(ReasonIn, {"reason": "x" * 2001}) == ("reason", "max_length")
