"""What the demo does, decided up front and seeded: the providers that apply and the referrals raised
(pure: no I/O; the same seed gives the same plans)."""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from services.demo.region import (
    BOROUGHS,
    CARE_NEEDS,
    CO_OCCURRING,
    FEE_BANDS,
    INWARD_LETTERS,
    KIND_MIX,
    NAME_STEMS,
    NAME_SUFFIXES,
    NEED_PROFILE_EMPHASIS,
    NEEDS_INDICATORS,
    NEIGHBOURS,
    OUT_OF_REGION,
    OUTCOMES,
    SCHOOL_NEEDS,
)

# --------------------------------------------------------------------------- plans (pure)


@dataclass
class ProviderPlan:
    index: int
    kind: str
    name: str
    urn: str
    lots: list[str]
    age_min: int
    age_max: int
    genders: list[str]
    placement_types: list[str]
    capacity: int
    location: dict[str, Any] | None
    boroughs_served: list[str]
    email: str
    tier: float  # 0 (weak) .. 1 (excellent): drives inspections, outcomes and price
    base_fees: dict[str, int]
    inspections: list[dict[str, Any]]
    outcomes: list[dict[str, Any]]
    decision: str  # approve | reject | pending
    reject_reason: str | None = None
    id: str | None = None

    def application(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name, "urn": self.urn, "kind": self.kind, "lots": self.lots, "age_min": self.age_min,
            "age_max": self.age_max, "genders": self.genders, "placement_types": self.placement_types,
            "capacity": self.capacity, "boroughs_served": self.boroughs_served, "contact_email": self.email}
        if self.location is not None:
            body["location"] = self.location
        return body


@dataclass
class ReferralPlan:
    index: int
    borough: str
    body: dict[str, Any]
    scenario: str  # award | open | withdraw | close
    amend: bool
    preferred: int | None  # provider plan index
    justify: bool = False  # award other than the top offer, with a written justification
    id: str | None = None


def weighted(rng: random.Random, weights: Mapping[str, float] | Sequence[tuple[str, float]]) -> str:
    items = list(weights.items()) if isinstance(weights, Mapping) else list(weights)
    return rng.choices([k for k, _ in items], weights=[w for _, w in items])[0]


def _postcode(rng: random.Random, district: str) -> str:
    return f"{district} {rng.randint(1, 9)}{rng.choice(INWARD_LETTERS)}{rng.choice(INWARD_LETTERS)}"


def _location(rng: random.Random, district: tuple[str, float, float], coordinates: bool = True) -> dict[str, Any]:
    code, lat, lon = district
    location: dict[str, Any] = {"postcode": _postcode(rng, code)}
    if coordinates:
        location["lat"] = round(lat + rng.uniform(-0.008, 0.008), 4)
        location["lon"] = round(lon + rng.uniform(-0.012, 0.012), 4)
    return location


def _kinds(rng: random.Random, count: int) -> list[str]:
    kinds: list[str] = []
    for kind, share in KIND_MIX:
        kinds += [kind] * round(count * share)
    while len(kinds) < count:
        kinds.append("independent_special_school")
    kinds = kinds[:count]
    rng.shuffle(kinds)
    return kinds


def round_fee(pence: float, band: tuple[int, int]) -> int:
    low, high = band
    return int(min(high, max(low, round(pence / 500) * 500)))


def plan_providers(seed: int, count: int, today: date) -> list[ProviderPlan]:
    """The region's providers, decided up front from the seed (ids come later, from the server)."""
    rng = random.Random(f"{seed}:providers")
    stems = list(NAME_STEMS)
    rng.shuffle(stems)
    used_names: set[str] = set()
    used_urns: set[str] = set()
    boroughs = list(BOROUGHS)
    plans: list[ProviderPlan] = []
    for index, kind in enumerate(_kinds(rng, count)):
        stem = stems[index % len(stems)]
        name = f"{stem} {rng.choice(NAME_SUFFIXES[kind])}"
        if kind == "non_maintained_special_school" and rng.random() < 0.4:
            name = f"St {rng.choice(('Anne', 'Christopher', 'Luke', 'Margaret', 'Michael', 'Hilda'))}'s School"
        while name in used_names:
            name = f"{name} {rng.choice(('North', 'South', 'East', 'West', 'II'))}"
        used_names.add(name)
        school = kind in ("independent_special_school", "non_maintained_special_school", "specialist_college")
        while True:
            urn = f"SC{rng.randint(400000, 499999)}" if not school else str(rng.randint(100000, 149999))
            if urn not in used_urns:
                used_urns.add(urn)
                break
        tier = rng.betavariate(4, 2)

        if school:
            primary = weighted(rng, SCHOOL_NEEDS)
        elif kind == "childrens_home":
            primary = weighted(rng, CARE_NEEDS)
        else:
            primary = "SEMH"
        lots = [primary]
        for extra in CO_OCCURRING[primary]:
            if rng.random() < (0.55 if kind == "fostering_agency" else 0.4):
                lots.append(extra)

        placement_types: list[str]
        if kind == "independent_special_school":
            age_min, age_max = rng.choice(((5, 16), (7, 19), (11, 19), (4, 11), (11, 16), (5, 19)))
            placement_types = ["day"]
            if rng.random() < 0.25:
                placement_types.append("residential_38")
            if rng.random() < 0.10:
                placement_types.append("residential_52")
            capacity = rng.choice((0, 1, 2, 2, 3, 3, 4, 5, 6, 8))
        elif kind == "non_maintained_special_school":
            age_min, age_max = rng.choice(((4, 19), (5, 19), (11, 19)))
            placement_types = ["day", "residential_38"] + (["residential_52"] if rng.random() < 0.4 else [])
            capacity = rng.randint(1, 6)
        elif kind == "specialist_college":
            age_min, age_max = rng.choice(((16, 25), (16, 24), (16, 19)))
            placement_types = ["day"] + (["residential_38"] if rng.random() < 0.5 else [])
            capacity = rng.randint(2, 12)
        elif kind == "childrens_home":
            age_min, age_max = rng.choice(((8, 17), (11, 17), (12, 17), (10, 17)))
            placement_types = ["childrens_home"] + (["residential_52"] if rng.random() < 0.15 else [])
            capacity = rng.choice((0, 1, 1, 2, 2, 3, 4))
        else:
            age_min, age_max = 0, 17
            placement_types = ["foster_care"]
            capacity = rng.randint(3, 15)

        roll = rng.random()
        genders = (["male"] if roll < 0.07 else ["female"] if roll < 0.11
                   else ["female", "male", "non_binary"] if roll < 0.18 else ["female", "male"])

        home = rng.choice(boroughs)
        away = (kind == "childrens_home" and rng.random() < 0.5) or (
            school and any(t.startswith("residential") for t in placement_types) and rng.random() < 0.6)
        district = rng.choice(OUT_OF_REGION) if away else rng.choice(BOROUGHS[home]["districts"])
        location: dict[str, Any] | None = _location(rng, district, coordinates=rng.random() > 0.06)
        if kind == "fostering_agency" and rng.random() < 0.15:
            location = None  # carers live across the region: the agency gives no single location
        if away or rng.random() < 0.55:
            served: list[str] = []
        else:
            served = sorted({home, *rng.sample(NEIGHBOURS[home], k=min(len(NEIGHBOURS[home]), rng.randint(1, 3)))})

        slug = "".join(ch for ch in name.lower() if ch.isalnum())[:24]
        email = f"{'referrals' if not school else 'admissions'}@{slug}.example"

        base_fees = {}
        for ptype in placement_types:
            low, high = FEE_BANDS[ptype]
            centre = low + (high - low) * (0.25 + 0.35 * tier + rng.uniform(-0.15, 0.2))
            base_fees[ptype] = round_fee(centre, FEE_BANDS[ptype])

        inspections = _plan_inspections(rng, kind, tier, today)
        outcomes = _plan_outcomes(rng, kind, tier, today)
        plans.append(ProviderPlan(
            index=index, kind=kind, name=name, urn=urn, lots=lots, age_min=age_min, age_max=age_max,
            genders=genders, placement_types=placement_types, capacity=capacity, location=location,
            boroughs_served=served, email=email, tier=tier, base_fees=base_fees, inspections=inspections,
            outcomes=outcomes, decision="approve"))
    _decide(rng, plans)
    return plans


def _legacy_grade(rng: random.Random, tier: float) -> str:
    if tier > 0.82:
        return rng.choice(("outstanding", "outstanding", "good"))
    if tier > 0.45:
        return rng.choice(("good", "good", "good", "outstanding", "requires_improvement"))
    return rng.choice(("good", "requires_improvement", "requires_improvement"))


def _card_grade(rng: random.Random, tier: float) -> str:
    grades = ("urgent_improvement", "needs_attention", "expected", "strong", "exceptional")
    position = min(4, max(1, round(tier * 4 + rng.uniform(-0.9, 0.9))))
    return grades[position]


def _plan_inspections(rng: random.Random, kind: str, tier: float, today: date) -> list[dict[str, Any]]:
    """Legacy Ofsted judgements for most; the 2025 report cards (schools only, from November 2025)
    for some."""
    school = kind in ("independent_special_school", "non_maintained_special_school", "specialist_college")
    days_ago = rng.randint(200, 5 * 365)
    inspections: list[dict[str, Any]] = [{"framework": "ofsted_legacy", "overall": _legacy_grade(rng, tier),
                    "inspected_on": (today - timedelta(days=days_ago)).isoformat()}]
    card_from = date(2025, 11, 10)
    if school and today > card_from + timedelta(days=30) and rng.random() < 0.3:
        span = (today - card_from).days - 7
        inspected = card_from + timedelta(days=rng.randint(0, max(0, span)))
        areas = {"leadership_and_governance": _card_grade(rng, tier), "curriculum_and_teaching": _card_grade(rng, tier),
                 "achievement": _card_grade(rng, tier), "attendance_and_behaviour": _card_grade(rng, tier),
                 "personal_development_and_wellbeing": _card_grade(rng, tier), "inclusion": _card_grade(rng, tier)}
        if kind == "specialist_college":
            areas.pop("attendance_and_behaviour")
        inspections.append({"framework": "ofsted_report_card", "inspected_on": inspected.isoformat(),
                            "safeguarding": "met", "areas": areas})
    return inspections


def _plan_outcomes(rng: random.Random, kind: str, tier: float, today: date) -> list[dict[str, Any]]:
    if rng.random() < 0.3:
        return []
    year = today.year if today.month >= 9 else today.year - 1
    periods = [f"{year - 1}-{str(year)[2:]}"]
    if rng.random() < 0.35:
        periods.insert(0, f"{year - 2}-{str(year - 1)[2:]}")

    def kpi(low: int, high: int) -> int:
        return max(0, min(100, round(low + (high - low) * tier + rng.uniform(-6, 6))))

    records = []
    for period in periods:
        if kind in ("childrens_home", "fostering_agency"):
            kpis = {"placement_stability": kpi(55, 96), "education_engagement": kpi(50, 95),
                    "health_checks": kpi(70, 100)}
        elif kind == "specialist_college":
            kpis = {"attendance": kpi(78, 97), "destinations": kpi(55, 95), "ehcp_progress": kpi(50, 92)}
        else:
            kpis = {"attendance": kpi(80, 97), "ehcp_progress": kpi(50, 92), "placement_stability": kpi(70, 98)}
        records.append({"period": period, "kpis": kpis})
    return records


REJECTIONS = (
    ("inadequate", "Ofsted judged the provider inadequate; re-apply after re-inspection"),
    ("not_met", "Safeguarding not met at the latest inspection"),
    ("finance", "Failed financial due diligence: last two years' accounts not filed"),
)


def _decide(rng: random.Random, plans: list[ProviderPlan]) -> None:
    """About one applicant in twenty is rejected, one in forty still awaits a decision; the rest
    are approved. The first few are always approved, so every kind has a portal to watch."""
    candidates = [p for p in plans if p.index >= 5]
    rejected = rng.sample(candidates, k=min(len(candidates), max(1, round(len(plans) * 0.05))))
    for n, plan in enumerate(sorted(rejected, key=lambda p: p.index)):
        why, reason = REJECTIONS[n % len(REJECTIONS)]
        latest = plan.inspections[-1]
        if why == "not_met" and latest["framework"] == "ofsted_legacy":
            why, reason = REJECTIONS[0]
        if why == "inadequate" and latest["framework"] == "ofsted_legacy":
            latest["overall"] = "inadequate"
        elif why == "inadequate":
            latest["areas"]["leadership_and_governance"] = "urgent_improvement"
            reason = "Ofsted graded leadership urgent improvement; re-apply after re-inspection"
        elif why == "not_met":
            latest["safeguarding"] = "not_met"
        plan.decision, plan.reject_reason = "reject", reason
    undecided = [p for p in candidates if p.decision == "approve"]
    for plan in rng.sample(undecided, k=min(len(undecided), max(1, len(plans) // 40))):
        plan.decision = "pending"


def _needs_profile(rng: random.Random, primary: str, secondary: Iterable[str]) -> dict[str, int]:
    emphasis = set(NEED_PROFILE_EMPHASIS[primary])
    for code in secondary:
        emphasis |= set(NEED_PROFILE_EMPHASIS[code][:2])
    return {name: min(3, rng.choice((1, 2, 2, 3)) if name in emphasis else rng.choice((0, 0, 1, 1, 2)))
            for name in NEEDS_INDICATORS}


def _term_start(day: date) -> date:
    """The first day of the next school term on or after `day` (a typical SEND start date)."""
    starts = sorted({date(y, m, d) for y in (day.year, day.year + 1) for m, d in ((1, 5), (4, 20), (9, 3))})
    return next(s for s in starts if s >= day)


def plan_referrals(seed: int, count: int, providers: Sequence[ProviderPlan], today: date) -> list[ReferralPlan]:
    rng = random.Random(f"{seed}:referrals")
    demand = {code: info["demand"] for code, info in BOROUGHS.items()}
    sequence: Counter[str] = Counter()
    plans: list[ReferralPlan] = []
    for index in range(count):
        borough = weighted(rng, demand)
        sequence[borough] += 1
        ptype = weighted(rng, {"day": 52, "residential_38": 8, "residential_52": 7, "childrens_home": 19,
                                "foster_care": 14})
        care = ptype in ("childrens_home", "foster_care")
        primary = weighted(rng, CARE_NEEDS if care else SCHOOL_NEEDS)
        secondary = [c for c in CO_OCCURRING[primary] if rng.random() < 0.3][:2]
        if ptype == "day":
            age = rng.choices(range(4, 22), weights=[2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 8, 7, 6, 4, 3, 2, 1, 1])[0]
        elif ptype.startswith("residential"):
            age = rng.randint(10, 18)
        elif ptype == "childrens_home":
            age = rng.choices(range(9, 18), weights=[1, 2, 3, 5, 7, 8, 8, 6, 4])[0]
        else:
            age = rng.randint(1, 16)
        required_from = today + timedelta(days=rng.randint(21, 365))
        if not care and rng.random() < 0.5:
            required_from = _term_start(required_from)
        birth = required_from - timedelta(days=age * 365 + age // 4 + rng.randint(1, 360))
        deadline_day = min(today + timedelta(days=rng.randint(7, 28)), required_from - timedelta(days=7))
        district = rng.choice(BOROUGHS[borough]["districts"])
        location = None if rng.random() < 0.04 else _location(rng, district)
        if ptype == "day":
            max_km: int | None = rng.randint(12, 25)
        elif ptype == "foster_care":
            max_km = rng.randint(20, 40)
        else:
            max_km = None if rng.random() < 0.35 else rng.randint(50, 150)
        pool = OUTCOMES["care"] if care else OUTCOMES.get(primary, OUTCOMES["other"])
        outcomes = rng.sample(pool, k=min(len(pool), rng.randint(1, 3)))
        gender = "male" if rng.random() < (0.72 if not care else 0.58) else "female"
        body = {
            "child_ref": f"{BOROUGHS[borough]['prefix']}-{today.year}-{sequence[borough]:04d}",
            "birth_date": birth.isoformat(), "gender": gender, "primary_need": primary,
            "secondary_needs": secondary, "placement_type": ptype, "required_from": required_from.isoformat(),
            "location": location, "max_travel_km": max_km,
            "needs_profile": _needs_profile(rng, primary, secondary), "outcomes": outcomes,
            "offer_deadline": f"{deadline_day.isoformat()}T17:00:00Z", "preferred_provider_id": None,
        }
        scenario = weighted(rng, {"award": 72, "open": 11, "withdraw": 8, "close": 9})
        preferred = None
        if scenario in ("award", "open") and rng.random() < 0.12:
            fits = [p for p in providers if p.decision == "approve" and primary in p.lots
                    and ptype in p.placement_types and p.age_min <= age <= p.age_max and gender in p.genders
                    and (not p.boroughs_served or borough in p.boroughs_served)]
            if fits:
                preferred = rng.choice(fits).index
        plans.append(ReferralPlan(index=index, borough=borough, body=body, scenario=scenario,
                                  amend=rng.random() < 0.07, preferred=preferred,
                                  justify=scenario == "award" and rng.random() < 0.15))
    return plans
