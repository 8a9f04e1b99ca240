"""Enrolment's request models: every shape, type, code and bound of a request is checked here, once.

What they produce is typed (`Profile`, profile changes, `Inspection`, `Outcomes`, clean reasons); the
domain checks only business rules (age range order, immutable identity, dates that can count,
lifecycle). A refusal is 422 problem+json naming `field` and `rule` with the words the service has
always used (`unknown_code`, `non_empty`, `required`, `format`, `range`, `academic_year`,
`not_allowed_for_framework`; pydantic's own words for wrong JSON types, `missing`, `extra_forbidden`).

Order of refusals (as it always was): the token and role (401/403, `require`, before the body is
read); the body's JSON types (422: pydantic's words); for a provider's PATCH, its own record and the
fields it may change (403, `api.provider_may_change`); the values' rules (422: RULE_WORDS); the
business rules (422/409). Several faults in one body are all listed in `errors`; `field` and `rule`
name the first by field order (before issue 13, a JSON-type fault was named before a rule fault of
an earlier field: `{"name": " ", "capacity": "four"}` named capacity, now name).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any, NoReturn

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.inputs import clean_text, is_blank
from shared.vocabulary import (
    NEED_CODES,
    Gender,
    Location,
    NeedCode,
    PlacementType,
    ProviderKind,
    parse_postcode,
    values,
)

from .domain import MAX_REASON_LENGTH
from .profile import MAX_AGE, MAX_CAPACITY, MIN_AGE, Profile, ProfileChanges
from .scoring import (
    FRAMEWORK_FIELDS,
    Framework,
    Inspection,
    LegacyGrade,
    Outcomes,
    ReportCardGrade,
    Safeguarding,
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_BOROUGH = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
"""An inspection area or a KPI: lower case, e.g. 'leadership', 'attendance'."""
_ACADEMIC_YEAR = re.compile(r"^(\d{4})-(\d{2})$")


# --------------------------------------------------------------------------- refusals

RULE_WORDS = frozenset({"unknown_code", "non_empty", "required", "format", "max_length", "range",
                        "academic_year", "not_allowed_for_framework"})
"""The words of the values' rules (the domain's before issue 13), as against pydantic's for JSON types."""


def _error(rule: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(rule, "{detail}", {"detail": message})


def refuse(rule: str, message: str) -> NoReturn:
    """Refuse the value being validated, at its own place."""
    raise _error(rule, message)


def refuse_at(loc: tuple[str | int, ...], value: Any, rule: str, message: str) -> NoReturn:
    """Refuse at `loc` inside the value being validated (a dict's key, a model's field)."""
    raise ValidationError.from_exception_data("enrolment request", [
        InitErrorDetails(type=_error(rule, message), loc=loc, input=value)])


# --------------------------------------------------------------------------- field types

def _text_only(value: Any) -> Any:
    """Codes are JSON strings: anything else is pydantic's `string_type`, as for any text field."""
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    return value


def _code(codes: type[StrEnum], what: str, normalise: Callable[[str], str] = lambda text: text) -> Any:
    """One code of `codes` (a JSON string; `unknown_code` naming the choices otherwise)."""
    allowed = values(codes)

    def check(value: Any) -> Any:
        code = normalise(_text_only(value))
        if code not in allowed:
            refuse("unknown_code", f"{value!r} is not a known {what}; use one of {', '.join(allowed)}")
        return code

    return BeforeValidator(check)


def _code_list(codes: type[StrEnum], normalise: Callable[[str], str]) -> Any:
    """A non-empty list of codes, normalised in case and de-duplicated, order kept. Refusals name
    the list (`unknown_code`, `non_empty`); an item that is not a string is refused at its index."""
    allowed = values(codes)

    def check(value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, list):
            return value  # pydantic's list_type
        if not value:
            refuse("non_empty", f"{info.field_name} must name at least one of {', '.join(allowed)}")
        codes_: list[Any] = []
        for item in value:
            code = normalise(item) if isinstance(item, str) else item
            if isinstance(code, str) and code not in allowed:
                refuse("unknown_code", f"{item!r} is not a known {info.field_name} code; use one of "
                                       f"{', '.join(allowed)}")
            if code not in codes_:
                codes_.append(code)
        return codes_

    return BeforeValidator(check)


def _text(max_length: int) -> Any:
    """Text that says something (`required` when blank or invisible), at most `max_length` once cleaned."""
    def check(value: str, info: ValidationInfo) -> str:
        text = clean_text(value)
        if not text:
            refuse("required", f"{info.field_name} must not be blank (or only invisible characters)")
        if len(text) > max_length:
            refuse("max_length", f"{info.field_name} is longer than {max_length} characters")
        return text

    return AfterValidator(check)


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        refuse("format", f"{value!r} is not an email address")
    return value


def _postcode(value: str) -> str:
    if not value.strip():
        refuse("required", "location.postcode is required")
    postcode = parse_postcode(value)
    if postcode is None:
        refuse("format", f"{value!r} is not a UK postcode")
    return postcode


def _boroughs(value: list[str]) -> list[str]:
    """Borough codes served, lower case, de-duplicated; an empty list means every borough."""
    boroughs: list[str] = []
    for item in value:
        code = item.strip().lower()
        if not _BOROUGH.match(code):
            refuse("format", f"{item!r} is not a borough code (lower case, e.g. 'croydon')")
        if code not in boroughs:
            boroughs.append(code)
    return boroughs


def _names(what: str, example: str, *, non_empty: bool = True) -> Any:
    """An object whose keys are lower-case names (`non_empty`: at least one); a bad key is refused
    at its own place."""
    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, dict):
            if non_empty and not value:
                refuse("non_empty", f"give at least one {what}")
            for name in value:
                if not _NAME.match(name):
                    refuse_at((name,), value[name], "format",
                              f"{name!r} is not a{'n' if what[0] in 'aeiou' else ''} {what} name "
                              f"(lower case, e.g. '{example}')")
        return handler(value)

    return WrapValidator(check)


def _academic_year(value: str) -> str:
    match = _ACADEMIC_YEAR.match(value)
    if match is None or (int(match.group(1)) + 1) % 100 != int(match.group(2)):
        refuse("academic_year", f"{value!r} is not an academic year such as '2025-26'")
    return value


def _iso_date(value: Any) -> Any:
    """A date as ISO 8601 text (`date.fromisoformat`): `format` otherwise, pydantic's `string_type`
    for what is not text."""
    if isinstance(value, date):
        return value
    text = _text_only(value)
    try:
        return date.fromisoformat(text)
    except ValueError:
        refuse("format", f"{value!r} is not a date (YYYY-MM-DD)")


def _reason(value: str) -> str:
    if is_blank(value):
        refuse("required", "give a reason")
    if len(value) > MAX_REASON_LENGTH:
        refuse("max_length", f"reason is longer than {MAX_REASON_LENGTH} characters")
    return clean_text(value)


def _optional_reason(value: str | None) -> str | None:
    return None if value is None or is_blank(value) else _reason(value)


Name = Annotated[str, _text(200), Field(examples=["Riverside School"])]
Urn = Annotated[str, _text(20), Field(description="Ofsted unique reference number", examples=["100001"])]
Email = Annotated[str, _text(254), AfterValidator(_email), Field(examples=["admissions@riverside.example"])]
Age = Annotated[StrictInt, Field(ge=MIN_AGE, le=MAX_AGE)]
Capacity = Annotated[StrictInt, Field(ge=0, le=MAX_CAPACITY, description="Places free now (0 or more)")]
Kind = Annotated[ProviderKind, _code(ProviderKind, "kind")]
Lots = Annotated[list[Annotated[NeedCode, BeforeValidator(_text_only)]], _code_list(NeedCode, str.upper),
                 Field(description="SEN need codes served, e.g. ASD, SEMH, SLCN")]
Genders = Annotated[list[Annotated[Gender, BeforeValidator(_text_only)]], _code_list(Gender, str.lower),
                    Field(examples=[["female", "male"]])]
PlacementTypes = Annotated[list[Annotated[PlacementType, BeforeValidator(_text_only)]],
                           _code_list(PlacementType, str.lower), Field(examples=[["day", "residential_38"]])]
Boroughs = Annotated[list[str], AfterValidator(_boroughs)]


def _lot(value: Any) -> Any:
    """`?lot=`: a need code in any case, around spaces; empty is no filter."""
    if not value:
        return None
    code = _text_only(value).strip().upper()
    if code not in NEED_CODES:
        refuse("unknown_code", f"{value!r} is not a lot; use one of {', '.join(NEED_CODES)}")
    return code


LotQuery = Annotated[NeedCode | None, BeforeValidator(_lot)]
Reason = Annotated[str, AfterValidator(_reason)]
OptionalReason = Annotated[str | None, AfterValidator(_optional_reason)]
IsoDate = Annotated[date, BeforeValidator(_iso_date), Field(examples=["2024-03-01"])]
Kpi = Annotated[StrictInt, Field(ge=0, le=100)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocationIn(Model):
    postcode: Annotated[str, AfterValidator(_postcode)] = Field(examples=["SE1 7PB"])
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> LocationIn:
        if (self.lat is None) != (self.lon is None):
            missing = "lon" if self.lon is None else "lat"
            refuse_at((missing,), None, "required", "give both lat and lon, or neither")
        return self

    def to_location(self) -> Location:
        return Location(postcode=self.postcode, lat=self.lat, lon=self.lon)


def _location(location: LocationIn | None) -> Location | None:
    return None if location is None else location.to_location()


class ApplicationIn(Model):
    name: Name
    urn: Urn
    kind: Kind = Field(description=" | ".join(values(ProviderKind)))
    lots: Lots
    age_min: Age
    age_max: Age
    genders: Genders
    placement_types: PlacementTypes
    capacity: Capacity
    location: LocationIn | None = None
    boroughs_served: Boroughs = Field(default_factory=list, description="Empty = every borough of the partnership")
    contact_email: Email

    def to_profile(self) -> Profile:
        return Profile(
            name=self.name, urn=self.urn, kind=self.kind, lots=tuple(self.lots), age_min=self.age_min,
            age_max=self.age_max, genders=tuple(self.genders), placement_types=tuple(self.placement_types),
            capacity=self.capacity, contact_email=self.contact_email, location=_location(self.location),
            boroughs_served=tuple(self.boroughs_served))


class ProviderChanges(Model):
    """Any subset of the profile; `null` clears `location` (and `boroughs_served`: every borough)."""

    name: Name | None = None
    lots: Lots | None = None
    age_min: Age | None = None
    age_max: Age | None = None
    genders: Genders | None = None
    placement_types: PlacementTypes | None = None
    capacity: Capacity | None = None
    location: LocationIn | None = None
    boroughs_served: Boroughs | None = None
    contact_email: Email | None = None
    urn: str | None = Field(None, description="Cannot be changed (refused with 422)")
    kind: str | None = Field(None, description="Cannot be changed (refused with 422)")

    def to_changes(self) -> ProfileChanges:
        """The fields given, as the profile types them (lists as tuples, None for a null)."""
        changes: dict[str, Any] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if name == "location":
                value = _location(value)
            elif name == "boroughs_served":
                value = () if value is None else tuple(value)
            elif isinstance(value, list):
                value = tuple(value)
            changes[name] = value
        return changes


class InspectionIn(Model):
    framework: Annotated[Framework, _code(Framework, "inspection framework")] = Field(
        description=" | ".join(values(Framework)))
    inspected_on: IsoDate
    overall: Annotated[LegacyGrade, _code(LegacyGrade, "legacy Ofsted grade")] | None = Field(
        None, description="Legacy: " + " | ".join(values(LegacyGrade)))
    safeguarding: Annotated[Safeguarding, _code(Safeguarding, "safeguarding judgement")] | None = Field(
        None, description="Legacy (optional) and report card: " + " | ".join(values(Safeguarding)))
    areas: Annotated[dict[str, Annotated[ReportCardGrade, _code(ReportCardGrade, "report-card grade")]],
                     _names("area", "leadership", non_empty=False)] | None = Field(
        None, description="Report card: area -> " + " | ".join(values(ReportCardGrade)))

    @model_validator(mode="after")
    def _framework_fields(self) -> InspectionIn:
        """What each framework carries (a field given as null counts as not given)."""
        given = {name for name in self.model_fields_set if getattr(self, name) is not None}
        extra = sorted(given - FRAMEWORK_FIELDS[self.framework])
        if extra:
            refuse_at((extra[0],), getattr(self, extra[0]), "not_allowed_for_framework",
                      f"{extra[0]!r} is not part of a {self.framework} inspection")
        if self.framework == Framework.OFSTED_LEGACY:
            if self.overall is None:
                refuse_at(("overall",), None, "required", "overall is required for a legacy Ofsted judgement")
        elif self.safeguarding is None:
            refuse_at(("safeguarding",), None, "required",
                      "safeguarding (met or not_met) is required on a report card")
        elif self.areas is None:
            refuse_at(("areas",), None, "required", "areas is required on a report card")
        elif not self.areas:
            refuse_at(("areas",), self.areas, "non_empty", "grade at least one area")
        return self

    def to_inspection(self) -> Inspection:
        areas = {} if self.framework == Framework.OFSTED_LEGACY else dict(self.areas or {})
        return Inspection(self.framework, self.inspected_on, overall=self.overall,
                          safeguarding=self.safeguarding, areas=MappingProxyType(areas))


class OutcomesIn(Model):
    period: Annotated[str, AfterValidator(_academic_year)] = Field(examples=["2025-26"])
    kpis: Annotated[dict[str, Kpi], _names("KPI", "attendance")] = Field(
        examples=[{"attendance": 92, "ehcp_progress": 75}], description="name: whole percentage 0-100")

    def to_outcomes(self) -> Outcomes:
        return Outcomes(period=self.period, kpis=dict(self.kpis))


class ReasonIn(Model):
    reason: OptionalReason = None


class RequiredReasonIn(Model):
    reason: Reason
