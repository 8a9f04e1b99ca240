"""Inspections, outcome KPIs and the versioned quality-score policy. Pure, no I/O.

Rounding: every score is a `Decimal` rounded ROUND_HALF_UP to 2 places and serialised as a string
with 2 places ("80.00"). The inspection and outcomes scores are rounded first and the quality score
is computed from those rounded components, so anyone can recompute a `provider-rescored` event from
the numbers it carries.

Which evidence counts: the inspection with the latest `inspected_on` (a tie goes to the one recorded
later), and the outcomes of the latest academic `period` (a re-recorded period replaces the earlier
record). A late-recorded older inspection is kept in the history but does not change the score.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from shared.errors import RuleViolation
from shared.inputs import EARLIEST_DATE

TWO_PLACES = Decimal("0.01")

OFSTED_LEGACY = "ofsted_legacy"
OFSTED_REPORT_CARD = "ofsted_report_card"
FRAMEWORKS: tuple[str, ...] = (OFSTED_LEGACY, OFSTED_REPORT_CARD)
LEGACY_GRADES: tuple[str, ...] = ("outstanding", "good", "requires_improvement", "inadequate")
REPORT_CARD_GRADES: tuple[str, ...] = (
    "exceptional", "strong", "expected", "needs_attention", "urgent_improvement",
)
SAFEGUARDING_JUDGEMENTS: tuple[str, ...] = ("met", "not_met")
# Ofsted's 2025 toolkits call the area "leadership and governance"; DESIGN.md says "leadership".
LEADERSHIP_AREAS: frozenset[str] = frozenset({"leadership", "leadership_and_governance"})

_AREA = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_KPI = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_ACADEMIC_YEAR = re.compile(r"^(\d{4})-(\d{2})$")


def round_score(value: Decimal) -> Decimal:
    """Round half up to 2 places: the one rounding rule for every score."""
    return value.quantize(TWO_PLACES, rounding=ROUND_HALF_UP)


def format_score(value: Decimal | None) -> str | None:
    """A score as carried in events and responses: a string with exactly 2 places."""
    return None if value is None else str(round_score(value))


@dataclass(frozen=True)
class Inspection:
    """One inspection judgement, under either Ofsted framework."""

    framework: str
    inspected_on: date
    overall: str | None = None
    safeguarding: str | None = None
    areas: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def parse(cls, payload: Mapping[str, Any], *, today: date | None = None) -> Inspection:
        """Validate an inspection as posted; `today`, when given, refuses future dates."""
        framework = payload.get("framework")
        if framework is None:
            raise RuleViolation("framework is required", field="framework", rule="required")
        if framework not in FRAMEWORKS:
            raise RuleViolation(f"{framework!r} is not a known inspection framework; use "
                                f"{' or '.join(FRAMEWORKS)}", field="framework",
                                rule="unknown_code")
        allowed = ({"framework", "inspected_on", "overall", "safeguarding"}
                   if framework == OFSTED_LEGACY
                   else {"framework", "inspected_on", "safeguarding", "areas"})
        extra = sorted(set(payload) - allowed)
        if extra:
            raise RuleViolation(f"{extra[0]!r} is not part of a {framework} inspection",
                                field=extra[0], rule="not_allowed_for_framework")
        inspected_on = _parse_date(payload.get("inspected_on"), "inspected_on")
        if today is not None and inspected_on > today:
            raise RuleViolation(f"inspected_on {inspected_on} is in the future",
                                field="inspected_on", rule="not_in_future")
        if inspected_on < EARLIEST_DATE:
            raise RuleViolation(f"inspected_on {inspected_on} is before {EARLIEST_DATE}: not a "
                                "judgement that can count", field="inspected_on", rule="range")
        safeguarding = payload.get("safeguarding")
        if framework == OFSTED_LEGACY:
            overall = payload.get("overall")
            if overall is None:
                raise RuleViolation("overall is required for a legacy Ofsted judgement",
                                    field="overall", rule="required")
            if overall not in LEGACY_GRADES:
                raise RuleViolation(f"{overall!r} is not a legacy Ofsted grade; use one of "
                                    f"{', '.join(LEGACY_GRADES)}", field="overall",
                                    rule="unknown_code")
            if safeguarding is not None:
                _check_safeguarding(safeguarding)
            return cls(framework, inspected_on, overall=overall, safeguarding=safeguarding)
        if safeguarding is None:
            raise RuleViolation("safeguarding (met or not_met) is required on a report card",
                                field="safeguarding", rule="required")
        _check_safeguarding(safeguarding)
        return cls(framework, inspected_on, safeguarding=safeguarding,
                   areas=MappingProxyType(_parse_areas(payload.get("areas"))))

    def blocking_reason(self) -> str | None:
        """Why this judgement blocks approval (and suspends an approved provider), if it does."""
        when = self.inspected_on.isoformat()
        if self.overall == "inadequate":
            return f"Ofsted judged the provider inadequate on {when}"
        if self.safeguarding == "not_met":
            return f"Ofsted found safeguarding not met on {when}"
        for area in sorted(LEADERSHIP_AREAS & set(self.areas)):
            if self.areas[area] == "urgent_improvement":
                return f"Ofsted graded {area} urgent_improvement on {when}"
        return None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"framework": self.framework,
                                "inspected_on": self.inspected_on.isoformat()}
        if self.framework == OFSTED_LEGACY:
            data["overall"] = self.overall
            if self.safeguarding is not None:
                data["safeguarding"] = self.safeguarding
        else:
            data["safeguarding"] = self.safeguarding
            data["areas"] = dict(self.areas)
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Inspection:
        return cls(framework=data["framework"],
                   inspected_on=date.fromisoformat(data["inspected_on"]),
                   overall=data.get("overall"), safeguarding=data.get("safeguarding"),
                   areas=MappingProxyType(dict(data.get("areas") or {})))


@dataclass(frozen=True)
class Outcomes:
    """Outcome KPIs for one academic year, each a whole percentage 0–100."""

    period: str
    kpis: Mapping[str, int]

    @classmethod
    def parse(cls, payload: Mapping[str, Any], *, today: date | None = None) -> Outcomes:
        """Validate outcomes as posted; `today`, when given, refuses years not yet begun."""
        extra = sorted(set(payload) - {"period", "kpis"})
        if extra:
            raise RuleViolation(f"unknown field {extra[0]!r}", field=extra[0],
                                rule="unknown_field")
        period = payload.get("period")
        if period is None:
            raise RuleViolation("period is required, e.g. '2025-26'", field="period",
                                rule="required")
        match = _ACADEMIC_YEAR.match(period) if isinstance(period, str) else None
        if match is None or (int(match.group(1)) + 1) % 100 != int(match.group(2)):
            raise RuleViolation(f"{period!r} is not an academic year such as '2025-26'",
                                field="period", rule="academic_year")
        first_year = int(match.group(1))
        if first_year < EARLIEST_DATE.year or (today is not None and first_year > today.year):
            latest = f" and {today.year}-{(today.year + 1) % 100:02d}" if today is not None else ""
            raise RuleViolation(f"period {period} is not a year between {EARLIEST_DATE.year}-"
                                f"{(EARLIEST_DATE.year + 1) % 100:02d}{latest}", field="period",
                                rule="range")
        kpis = payload.get("kpis")
        if kpis is None:
            raise RuleViolation("kpis is required", field="kpis", rule="required")
        if not isinstance(kpis, Mapping):
            raise RuleViolation("kpis must be an object of name: 0..100", field="kpis",
                                rule="type")
        if not kpis:
            raise RuleViolation("record at least one KPI", field="kpis", rule="non_empty")
        for name, value in kpis.items():
            if not isinstance(name, str) or not _KPI.match(name):
                raise RuleViolation(f"{name!r} is not a KPI name (lower case, e.g. "
                                    "'attendance')", field=f"kpis.{name}", rule="format")
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise RuleViolation(f"KPI {name} must be a whole number from 0 to 100, "
                                    f"not {value!r}", field=f"kpis.{name}", rule="range")
        return cls(period=period, kpis=MappingProxyType(dict(kpis)))

    def to_data(self) -> dict[str, Any]:
        return {"period": self.period, "kpis": dict(self.kpis)}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Outcomes:
        return cls(period=data["period"], kpis=MappingProxyType(dict(data["kpis"])))


@dataclass(frozen=True)
class QualityScore:
    """A computed score with everything needed to recompute it."""

    quality_score: Decimal
    inspection_score: Decimal
    outcomes_score: Decimal | None
    policy_version: int
    inspection: Inspection
    outcomes: Outcomes | None

    def same_result(self, other: QualityScore | None) -> bool:
        return other is not None and (
            (self.quality_score, self.inspection_score, self.outcomes_score, self.policy_version)
            == (other.quality_score, other.inspection_score, other.outcomes_score,
                other.policy_version))

    def to_data(self) -> dict[str, Any]:
        """The `data` of a `provider-rescored` event (shared/EVENTS.md)."""
        return {
            "quality_score": format_score(self.quality_score),
            "policy_version": self.policy_version,
            "inspection_score": format_score(self.inspection_score),
            "outcomes_score": format_score(self.outcomes_score),
            "inputs": {"inspection": self.inspection.to_data(),
                       "outcomes": self.outcomes.to_data() if self.outcomes else None},
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> QualityScore:
        inputs = data["inputs"]
        return cls(
            quality_score=Decimal(data["quality_score"]),
            inspection_score=Decimal(data["inspection_score"]),
            outcomes_score=(Decimal(data["outcomes_score"])
                            if data.get("outcomes_score") is not None else None),
            policy_version=data["policy_version"],
            inspection=Inspection.from_data(inputs["inspection"]),
            outcomes=Outcomes.from_data(inputs["outcomes"]) if inputs.get("outcomes") else None,
        )


@dataclass(frozen=True)
class QualityPolicy:
    """How inspection grades and outcome KPIs become a 0–100 quality score.

    Versioned: a new weighting or grade table is a new version, and every score records the
    version that produced it, so old scores stay reproducible.
    """

    version: int
    inspection_weight: Decimal
    outcomes_weight: Decimal
    legacy_points: Mapping[str, Decimal]
    report_card_points: Mapping[str, Decimal]

    def inspection_score(self, inspection: Inspection) -> Decimal:
        if inspection.framework == OFSTED_LEGACY:
            assert inspection.overall is not None
            return round_score(self.legacy_points[inspection.overall])
        points = [self.report_card_points[grade] for grade in inspection.areas.values()]
        return round_score(sum(points, Decimal(0)) / len(points))

    def outcomes_score(self, outcomes: Outcomes) -> Decimal:
        values = [Decimal(value) for value in outcomes.kpis.values()]
        return round_score(sum(values, Decimal(0)) / len(values))

    def score(self, inspection: Inspection, outcomes: Outcomes | None) -> QualityScore:
        inspection_score = self.inspection_score(inspection)
        if outcomes is None:
            return QualityScore(inspection_score, inspection_score, None, self.version,
                                inspection, None)
        outcomes_score = self.outcomes_score(outcomes)
        quality = round_score(self.inspection_weight * inspection_score
                              + self.outcomes_weight * outcomes_score)
        return QualityScore(quality, inspection_score, outcomes_score, self.version,
                            inspection, outcomes)


POLICY_V1 = QualityPolicy(
    version=1,
    inspection_weight=Decimal("0.7"),
    outcomes_weight=Decimal("0.3"),
    legacy_points=MappingProxyType({
        "outstanding": Decimal(100), "good": Decimal(80),
        "requires_improvement": Decimal(50), "inadequate": Decimal(0),
    }),
    report_card_points=MappingProxyType({
        "exceptional": Decimal(100), "strong": Decimal(85), "expected": Decimal(70),
        "needs_attention": Decimal(40), "urgent_improvement": Decimal(0),
    }),
)
POLICIES: Mapping[int, QualityPolicy] = MappingProxyType({POLICY_V1.version: POLICY_V1})
CURRENT_POLICY: QualityPolicy = POLICY_V1


def policy(version: int) -> QualityPolicy:
    """The policy of a given version, to recompute a recorded score."""
    try:
        return POLICIES[version]
    except KeyError:
        raise LookupError(f"no quality policy version {version}") from None


def current_inspection(inspections: Iterable[Inspection]) -> Inspection | None:
    """The inspection that counts: latest `inspected_on`, a tie going to the later record."""
    latest: Inspection | None = None
    for inspection in inspections:
        if latest is None or inspection.inspected_on >= latest.inspected_on:
            latest = inspection
    return latest


def current_outcomes(records: Iterable[Outcomes]) -> Outcomes | None:
    """The outcomes that count: latest academic period, a re-recorded period replacing the old."""
    latest: Outcomes | None = None
    for record in records:
        if latest is None or record.period >= latest.period:
            latest = record
    return latest


def _check_safeguarding(value: Any) -> None:
    if value not in SAFEGUARDING_JUDGEMENTS:
        raise RuleViolation(f"safeguarding must be met or not_met, not {value!r}",
                            field="safeguarding", rule="unknown_code")


def _parse_areas(areas: Any) -> dict[str, str]:
    if areas is None:
        raise RuleViolation("areas is required on a report card", field="areas",
                            rule="required")
    if not isinstance(areas, Mapping):
        raise RuleViolation("areas must be an object of area: grade", field="areas",
                            rule="type")
    if not areas:
        raise RuleViolation("grade at least one area", field="areas", rule="non_empty")
    parsed: dict[str, str] = {}
    for area, grade in areas.items():
        if not isinstance(area, str) or not _AREA.match(area):
            raise RuleViolation(f"{area!r} is not an area name (lower case, e.g. 'leadership')",
                                field=f"areas.{area}", rule="format")
        if grade not in REPORT_CARD_GRADES:
            raise RuleViolation(f"{grade!r} is not a report-card grade; use one of "
                                f"{', '.join(REPORT_CARD_GRADES)}", field=f"areas.{area}",
                                rule="unknown_code")
        parsed[area] = grade
    return parsed


def _parse_date(value: Any, field: str) -> date:
    if value is None:
        raise RuleViolation(f"{field} is required (YYYY-MM-DD)", field=field, rule="required")
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise RuleViolation(f"{value!r} is not a date (YYYY-MM-DD)", field=field,
                            rule="format") from None
