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
from dataclasses import dataclass, field, replace
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


PLACEMENT_STATUS_RANK: Mapping[str, int] = MappingProxyType({"awarded": 0, "active": 1, "ended": 2, "collapsed": 2})
"""A placement moves forward only: a late or redelivered `placement-started` never reopens an ended one."""
HOLDING = frozenset({"awarded", "active"})
"""A placement in these states takes one of the provider's places (vacancies = capacity - held)."""
SHARE_PLACES = Decimal("0.000001")
"""The sum of achieved shares is kept (and recorded) to 6 places, so the event alone recomputes it."""
STABILITY_DAYS = 365
"""A placement ended unplanned within this many days of its start counts as unstable."""


@dataclass(frozen=True)
class PlacementRecord:
    """What enrolment keeps of one of the provider's placements (from placematch.placement): enough
    to count its vacancies and to score its outcomes, nothing about the child."""

    placement_id: str
    status: str
    started_on: date | None = None
    ended_on: date | None = None
    ending: str | None = None
    reason: str | None = None
    reviewed_on: date | None = None
    achieved: int = 0
    rated: int = 0

    @property
    def holds_place(self) -> bool:
        return self.status in HOLDING

    @property
    def started(self) -> bool:
        return self.started_on is not None

    @property
    def unstable(self) -> bool:
        """Ended unplanned within STABILITY_DAYS of its start."""
        return (self.ending == "unplanned" and self.started_on is not None and self.ended_on is not None
                and (self.ended_on - self.started_on).days < STABILITY_DAYS)

    def to_data(self) -> dict[str, Any]:
        def day(value: date | None) -> str | None:
            return None if value is None else value.isoformat()
        return {"placement_id": self.placement_id, "status": self.status, "started_on": day(self.started_on),
                "ended_on": day(self.ended_on), "ending": self.ending, "reason": self.reason,
                "reviewed_on": day(self.reviewed_on), "achieved": self.achieved, "rated": self.rated}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> PlacementRecord:
        def day(name: str) -> date | None:
            value = data.get(name)
            return None if value is None else date.fromisoformat(value)
        return cls(placement_id=str(data["placement_id"]), status=str(data["status"]),
                   started_on=day("started_on"), ended_on=day("ended_on"), ending=data.get("ending"),
                   reason=data.get("reason"), reviewed_on=day("reviewed_on"),
                   achieved=int(data.get("achieved") or 0), rated=int(data.get("rated") or 0))

    def after(self, type: str, data: Mapping[str, Any]) -> PlacementRecord:
        """This record once a placement event is taken into account (pure; idempotent: the same event
        twice gives the same record, and a placement never moves back to an earlier state)."""
        def forward(status: str) -> str:
            return status if PLACEMENT_STATUS_RANK[status] > PLACEMENT_STATUS_RANK[self.status] else self.status

        def day(name: str) -> date | None:
            value = data.get(name)
            return None if value is None else date.fromisoformat(str(value))
        match type:
            case "placement-started":
                return replace(self, status=forward("active"), started_on=self.started_on or day("started_on"))
            case "placement-ended":
                return replace(self, status=forward("ended"), started_on=self.started_on or day("started_on"),
                               ended_on=day("ended_on"), ending=data.get("ending"), reason=data.get("reason"))
            case "award-collapsed":
                return replace(self, status=forward("collapsed"))
            case "placement-reviewed":
                reviewed_on = day("reviewed_on")
                if reviewed_on is None or (self.reviewed_on is not None and reviewed_on < self.reviewed_on):
                    return self  # an older review than the latest one counted changes nothing
                ratings = list(data.get("outcomes") or [])
                return replace(self, reviewed_on=reviewed_on, rated=len(ratings),
                               achieved=sum(1 for r in ratings if r.get("progress") == "achieved"))
        return self


def held_places(placements: Iterable[PlacementRecord]) -> int:
    return sum(1 for p in placements if p.holds_place)


@dataclass(frozen=True)
class PlacementOutcomes:
    """The placement evidence of a provider as scored by policy version 2 (all of it recorded in
    `provider-rescored`'s `inputs.placements`, so the score can be recomputed from the event)."""

    started: int
    stable: int
    reviewed: int
    achieved_share_sum: Decimal
    """Sum over reviewed placements of achieved / rated outcomes at the latest review (exact)."""

    @classmethod
    def of(cls, placements: Iterable[PlacementRecord]) -> PlacementOutcomes:
        started = [p for p in placements if p.started]
        reviewed = [p for p in started if p.rated > 0]
        return cls(started=len(started), stable=sum(1 for p in started if not p.unstable),
                   reviewed=len(reviewed),
                   achieved_share_sum=sum((Decimal(p.achieved) / Decimal(p.rated) for p in reviewed),
                                          Decimal(0)).quantize(SHARE_PLACES))

    def to_data(self) -> dict[str, Any]:
        return {"started": self.started, "stable": self.stable, "reviewed": self.reviewed,
                "achieved_share_sum": str(self.achieved_share_sum.quantize(SHARE_PLACES))}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> PlacementOutcomes:
        return cls(started=int(data["started"]), stable=int(data["stable"]), reviewed=int(data["reviewed"]),
                   achieved_share_sum=Decimal(data["achieved_share_sum"]))


@dataclass(frozen=True)
class QualityScore:
    """A computed score with everything needed to recompute it."""

    quality_score: Decimal
    inspection_score: Decimal
    outcomes_score: Decimal | None
    policy_version: int
    inspection: Inspection
    outcomes: Outcomes | None
    placements: PlacementOutcomes | None = None
    """Version 2 and later: the placement evidence, and the parts computed from it."""
    kpi_score: Decimal | None = None
    placement_score: Decimal | None = None
    stability_score: Decimal | None = None
    achievement_score: Decimal | None = None

    def same_result(self, other: QualityScore | None) -> bool:
        return other is not None and (
            (self.quality_score, self.inspection_score, self.outcomes_score, self.policy_version)
            == (other.quality_score, other.inspection_score, other.outcomes_score,
                other.policy_version))

    def to_data(self) -> dict[str, Any]:
        """The `data` of a `provider-rescored` event (shared/EVENTS.md). Version 1's shape is kept
        exactly; version 2 adds the KPI and placement parts and `inputs.placements`."""
        data: dict[str, Any] = {
            "quality_score": format_score(self.quality_score),
            "policy_version": self.policy_version,
            "inspection_score": format_score(self.inspection_score),
            "outcomes_score": format_score(self.outcomes_score),
            "inputs": {"inspection": self.inspection.to_data(),
                       "outcomes": self.outcomes.to_data() if self.outcomes else None},
        }
        if self.policy_version >= 2:
            data.update({"kpi_score": format_score(self.kpi_score),
                         "placement_score": format_score(self.placement_score),
                         "stability_score": format_score(self.stability_score),
                         "achievement_score": format_score(self.achievement_score)})
            data["inputs"]["placements"] = None if self.placements is None else self.placements.to_data()
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> QualityScore:
        inputs = data["inputs"]

        def part(name: str) -> Decimal | None:
            return None if data.get(name) is None else Decimal(data[name])
        return cls(
            placements=PlacementOutcomes.from_data(inputs["placements"]) if inputs.get("placements") else None,
            kpi_score=part("kpi_score"), placement_score=part("placement_score"),
            stability_score=part("stability_score"), achievement_score=part("achievement_score"),
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
    pseudo_placements: Decimal | None = None
    """Version 2: k, the weight (in placements) of the regional mean in the shrunk placement parts."""
    regional_stability: Decimal = Decimal(0)
    regional_achievement: Decimal = Decimal(0)

    def inspection_score(self, inspection: Inspection) -> Decimal:
        if inspection.framework == OFSTED_LEGACY:
            assert inspection.overall is not None
            return two_places(self.legacy_points[inspection.overall])
        points = [self.report_card_points[grade] for grade in inspection.areas.values()]
        return two_places(sum(points, Decimal(0)) / len(points))

    def outcomes_score(self, outcomes: Outcomes) -> Decimal:
        values = [Decimal(value) for value in outcomes.kpis.values()]
        return two_places(sum(values, Decimal(0)) / len(values))

    def shrunk(self, successes: Decimal, count: int, regional_mean: Decimal) -> Decimal:
        """100 · (successes + k · mean/100) / (count + k): the observed share, pulled toward the
        regional mean by k pseudo-placements (all of the mean with no evidence, less as it grows)."""
        assert self.pseudo_placements is not None
        k = self.pseudo_placements
        return two_places(100 * (successes + k * regional_mean / 100) / (count + k))

    def placement_parts(self, placements: PlacementOutcomes | None
                        ) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
        """(stability, achievement, placement score); all None before a placement has started."""
        if placements is None or placements.started == 0:
            return None, None, None
        stability = self.shrunk(Decimal(placements.stable), placements.started, self.regional_stability)
        achievement = self.shrunk(placements.achieved_share_sum, placements.reviewed, self.regional_achievement)
        return stability, achievement, two_places((stability + achievement) / 2)

    def score(self, inspection: Inspection, outcomes: Outcomes | None,
              placements: PlacementOutcomes | None = None) -> QualityScore:
        if self.pseudo_placements is not None:
            return self._score_v2(inspection, outcomes, placements)
        inspection_score = self.inspection_score(inspection)
        if outcomes is None:
            return QualityScore(inspection_score, inspection_score, None, self.version,
                                inspection, None)
        outcomes_score = self.outcomes_score(outcomes)
        quality = two_places(self.inspection_weight * inspection_score
                              + self.outcomes_weight * outcomes_score)
        return QualityScore(quality, inspection_score, outcomes_score, self.version,
                            inspection, outcomes)

    def _score_v2(self, inspection: Inspection, outcomes: Outcomes | None,
                  placements: PlacementOutcomes | None) -> QualityScore:
        inspection_score = self.inspection_score(inspection)
        kpi = None if outcomes is None else self.outcomes_score(outcomes)
        stability, achievement, placement = self.placement_parts(placements)
        parts = [p for p in (kpi, placement) if p is not None]
        outcomes_score = two_places(sum(parts, Decimal(0)) / len(parts)) if parts else None
        quality = (inspection_score if outcomes_score is None else
                   two_places(self.inspection_weight * inspection_score + self.outcomes_weight * outcomes_score))
        return QualityScore(quality, inspection_score, outcomes_score, self.version, inspection, outcomes,
                            placements=placements, kpi_score=kpi, placement_score=placement,
                            stability_score=stability, achievement_score=achievement)


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
POLICY_V2 = QualityPolicy(
    version=2,
    inspection_weight=POLICY_V1.inspection_weight,
    outcomes_weight=POLICY_V1.outcomes_weight,
    legacy_points=POLICY_V1.legacy_points,
    report_card_points=POLICY_V1.report_card_points,
    pseudo_placements=Decimal(3),
    regional_stability=Decimal(80),
    regional_achievement=Decimal(50),
)
"""Version 2 (issue 16): the outcomes part also comes from placements (shared/EVENTS.md, "Quality
score policy version 2"): placement score = mean of stability and achievement, each shrunk toward
the regional mean by k = 3 pseudo-placements; outcomes = mean of the KPI score and the placement
score (whichever exist); quality = 0.7 · inspection + 0.3 · outcomes, as in version 1."""
POLICIES: Mapping[int, QualityPolicy] = MappingProxyType({POLICY_V1.version: POLICY_V1,
                                                          POLICY_V2.version: POLICY_V2})
CURRENT_POLICY: QualityPolicy = POLICY_V2


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
