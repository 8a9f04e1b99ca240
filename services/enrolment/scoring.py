"""Inspections, outcome KPIs and the versioned quality-score policy. Pure, no I/O.

Rounding: every score is a `Decimal` rounded by the vocabulary's one rule (`two_places`,
ROUND_HALF_UP) and serialised by its `format_score` as a string with 2 places ("80.00"). The
inspection and outcomes scores are rounded first and the quality score is computed from those
rounded components, so anyone can recompute a `provider-rescored` event from the numbers it carries.

Which evidence counts: the inspection with the latest `inspected_on` (a tie goes to the one recorded
later), and the outcomes of the latest academic `period` (a re-recorded period replaces the earlier
record). A late-recorded older inspection is kept in the history but does not change the score.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from shared.errors import RuleViolation
from shared.inputs import EARLIEST_DATE
from shared.vocabulary import format_score, two_places, values


class Framework(StrEnum):
    OFSTED_LEGACY = "ofsted_legacy"
    OFSTED_REPORT_CARD = "ofsted_report_card"


class LegacyGrade(StrEnum):
    OUTSTANDING = "outstanding"
    GOOD = "good"
    REQUIRES_IMPROVEMENT = "requires_improvement"
    INADEQUATE = "inadequate"


class ReportCardGrade(StrEnum):
    EXCEPTIONAL = "exceptional"
    STRONG = "strong"
    EXPECTED = "expected"
    NEEDS_ATTENTION = "needs_attention"
    URGENT_IMPROVEMENT = "urgent_improvement"


class Safeguarding(StrEnum):
    MET = "met"
    NOT_MET = "not_met"


OFSTED_LEGACY = Framework.OFSTED_LEGACY
OFSTED_REPORT_CARD = Framework.OFSTED_REPORT_CARD
FRAMEWORKS: tuple[str, ...] = values(Framework)
LEGACY_GRADES: tuple[str, ...] = values(LegacyGrade)
REPORT_CARD_GRADES: tuple[str, ...] = values(ReportCardGrade)
SAFEGUARDING_JUDGEMENTS: tuple[str, ...] = values(Safeguarding)
# Ofsted's 2025 toolkits call the area "leadership and governance"; DESIGN.md says "leadership".
LEADERSHIP_AREAS: frozenset[str] = frozenset({"leadership", "leadership_and_governance"})
FRAMEWORK_FIELDS: Mapping[Framework, frozenset[str]] = MappingProxyType({
    Framework.OFSTED_LEGACY: frozenset({"framework", "inspected_on", "overall", "safeguarding"}),
    Framework.OFSTED_REPORT_CARD: frozenset({"framework", "inspected_on", "safeguarding", "areas"}),
})
"""What an inspection of each framework may carry (requests.InspectionIn refuses the rest)."""


def academic_year_start(period: str) -> int:
    """The first calendar year of an academic year as validated ("2025-26" -> 2025)."""
    return int(period[:4])


@dataclass(frozen=True)
class Inspection:
    """One inspection judgement, under either Ofsted framework (shape checked by requests.InspectionIn)."""

    framework: Framework
    inspected_on: date
    overall: LegacyGrade | None = None
    safeguarding: Safeguarding | None = None
    areas: Mapping[str, ReportCardGrade] = field(default_factory=lambda: MappingProxyType({}))

    def check(self, *, today: date | None = None) -> None:
        """The judgement can count: not in the future (when `today` is given), not before EARLIEST_DATE."""
        if today is not None and self.inspected_on > today:
            raise RuleViolation(f"inspected_on {self.inspected_on} is in the future",
                                field="inspected_on", rule="not_in_future")
        if self.inspected_on < EARLIEST_DATE:
            raise RuleViolation(f"inspected_on {self.inspected_on} is before {EARLIEST_DATE}: not a "
                                "judgement that can count", field="inspected_on", rule="range")

    def blocking_reason(self) -> str | None:
        """Why this judgement blocks approval (and suspends an approved provider), if it does."""
        when = self.inspected_on.isoformat()
        if self.overall == LegacyGrade.INADEQUATE:
            return f"Ofsted judged the provider inadequate on {when}"
        if self.safeguarding == Safeguarding.NOT_MET:
            return f"Ofsted found safeguarding not met on {when}"
        for area in sorted(LEADERSHIP_AREAS & set(self.areas)):
            if self.areas[area] == ReportCardGrade.URGENT_IMPROVEMENT:
                return f"Ofsted graded {area} urgent_improvement on {when}"
        return None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"framework": self.framework.value,
                                "inspected_on": self.inspected_on.isoformat()}
        if self.framework == OFSTED_LEGACY:
            data["overall"] = None if self.overall is None else self.overall.value
            if self.safeguarding is not None:
                data["safeguarding"] = self.safeguarding.value
        else:
            data["safeguarding"] = None if self.safeguarding is None else self.safeguarding.value
            data["areas"] = {area: grade.value for area, grade in self.areas.items()}
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Inspection:
        overall, safeguarding = data.get("overall"), data.get("safeguarding")
        return cls(framework=Framework(data["framework"]),
                   inspected_on=date.fromisoformat(data["inspected_on"]),
                   overall=None if overall is None else LegacyGrade(overall),
                   safeguarding=None if safeguarding is None else Safeguarding(safeguarding),
                   areas=MappingProxyType({area: ReportCardGrade(grade)
                                           for area, grade in (data.get("areas") or {}).items()}))


@dataclass(frozen=True)
class Outcomes:
    """Outcome KPIs for one academic year, each a whole percentage 0–100 (shape checked by requests.OutcomesIn)."""

    period: str
    kpis: Mapping[str, int]

    def check(self, *, today: date | None = None) -> None:
        """The year has begun (when `today` is given) and is not before EARLIEST_DATE's."""
        first_year = academic_year_start(self.period)
        if first_year < EARLIEST_DATE.year or (today is not None and first_year > today.year):
            latest = f" and {today.year}-{(today.year + 1) % 100:02d}" if today is not None else ""
            raise RuleViolation(f"period {self.period} is not a year between {EARLIEST_DATE.year}-"
                                f"{(EARLIEST_DATE.year + 1) % 100:02d}{latest}", field="period",
                                rule="range")

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
            return two_places(self.legacy_points[inspection.overall])
        points = [self.report_card_points[grade] for grade in inspection.areas.values()]
        return two_places(sum(points, Decimal(0)) / len(points))

    def outcomes_score(self, outcomes: Outcomes) -> Decimal:
        values = [Decimal(value) for value in outcomes.kpis.values()]
        return two_places(sum(values, Decimal(0)) / len(values))

    def score(self, inspection: Inspection, outcomes: Outcomes | None) -> QualityScore:
        inspection_score = self.inspection_score(inspection)
        if outcomes is None:
            return QualityScore(inspection_score, inspection_score, None, self.version,
                                inspection, None)
        outcomes_score = self.outcomes_score(outcomes)
        quality = two_places(self.inspection_weight * inspection_score
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
