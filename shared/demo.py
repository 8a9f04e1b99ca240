"""`placematch demo`: fill a running placematch with a realistic South London region, over HTTP.

Everything goes through the services' public APIs, exactly as borough case systems, provider
portals and the commissioning team would call them: ten boroughs, about a hundred providers
(independent and non-maintained special schools, specialist colleges, children's homes, fostering
agencies) inspected, scored and mostly approved, and a few hundred referrals with offers, declines,
awards (some justified away from the top of the shortlist), withdrawals and unfilled closures.

Determinism: every choice comes from `random.Random` seeded with `seed` (one stream for the region,
one per referral), never from a server-generated id, so the same seed sends the same requests.
Referrals run concurrently, so requests of different referrals interleave differently run to run;
within one referral the order is fixed. Dates are relative to today: the referral service refuses
an `offer_deadline` in the past, so a year of history cannot be back-dated — instead referrals are
raised now with `required_from` dates spread over the coming year.

The flow is event-driven: after a referral is raised, matching invites providers asynchronously.
The demo polls matching's eligible providers, and retries an offer answered 409 with Retry-After
(invitation not yet known at the referral service) or an award answered 409 (shortlist not yet
ranked), always with a bounded wait.

While it runs, the demo also plays a few provider portals and borough systems: it subscribes them
to webhooks pointing at a small receiver of its own, which checks every signature. The receiver
stops with the demo; later deliveries to those subscriptions fail and are retried, as for any
portal that went offline.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Iterable, Sequence, TypeVar

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.auth import mint_token
from shared.settings import Settings

T = TypeVar("T")

HTTP_CONCURRENCY = 8
"""Requests in flight at once: enough to keep four SQLite-backed services busy on two cores."""
RATE_LIMIT_PATIENCE_SECONDS = 90
"""A 429 whose Retry-After is at most this long is waited out and the request sent again."""
REFERRAL_FLOWS = 24
"""Referrals being worked at once (most of a flow's time is spent waiting on events)."""
EVENT_WAIT_SECONDS = 120.0
"""Longest wait for an asynchronous effect (an invitation list, a ranked shortlist). Generous:
`placematch up` runs all four services in one process, which a busy machine slows down a lot."""

# --------------------------------------------------------------------------- the region

BOROUGHS: dict[str, dict[str, Any]] = {
    # code: case reference prefix, relative demand, districts (outward code, lat, lon)
    "croydon": {"prefix": "CRO", "demand": 1.4, "districts": [
        ("CR0", 51.375, -0.092), ("CR2", 51.352, -0.083), ("CR7", 51.397, -0.103), ("SE25", 51.397, -0.074)]},
    "lambeth": {"prefix": "LAM", "demand": 1.2, "districts": [
        ("SW2", 51.452, -0.118), ("SW9", 51.470, -0.113), ("SE11", 51.489, -0.110), ("SW16", 51.423, -0.127),
        ("SE27", 51.430, -0.101)]},
    "southwark": {"prefix": "SWK", "demand": 1.2, "districts": [
        ("SE1", 51.498, -0.090), ("SE15", 51.470, -0.066), ("SE5", 51.474, -0.091), ("SE16", 51.495, -0.053),
        ("SE22", 51.453, -0.070)]},
    "lewisham": {"prefix": "LEW", "demand": 1.1, "districts": [
        ("SE6", 51.437, -0.017), ("SE13", 51.459, -0.010), ("SE4", 51.462, -0.036), ("SE14", 51.476, -0.043),
        ("SE23", 51.440, -0.051)]},
    "greenwich": {"prefix": "GRE", "demand": 1.0, "districts": [
        ("SE10", 51.481, -0.003), ("SE18", 51.485, 0.074), ("SE9", 51.447, 0.055), ("SE7", 51.485, 0.036),
        ("SE28", 51.503, 0.113)]},
    "bromley": {"prefix": "BRO", "demand": 1.0, "districts": [
        ("BR1", 51.410, 0.020), ("BR2", 51.391, 0.030), ("BR3", 51.407, -0.029), ("BR5", 51.385, 0.100),
        ("BR6", 51.366, 0.084)]},
    "bexley": {"prefix": "BEX", "demand": 0.8, "districts": [
        ("DA5", 51.440, 0.148), ("DA6", 51.455, 0.140), ("DA7", 51.462, 0.139), ("DA14", 51.428, 0.106),
        ("DA15", 51.440, 0.100)]},
    "merton": {"prefix": "MER", "demand": 0.7, "districts": [
        ("SM4", 51.394, -0.197), ("SW19", 51.420, -0.200), ("SW20", 51.410, -0.228), ("CR4", 51.401, -0.165)]},
    "sutton": {"prefix": "SUT", "demand": 0.7, "districts": [
        ("SM1", 51.365, -0.190), ("SM2", 51.352, -0.195), ("SM3", 51.373, -0.213), ("SM5", 51.362, -0.166),
        ("SM6", 51.362, -0.146)]},
    "wandsworth": {"prefix": "WAN", "demand": 1.0, "districts": [
        ("SW18", 51.452, -0.194), ("SW11", 51.465, -0.163), ("SW17", 51.430, -0.165), ("SW15", 51.459, -0.219),
        ("SW12", 51.445, -0.148)]},
}
NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "croydon": ("sutton", "merton", "lambeth", "bromley"),
    "lambeth": ("southwark", "wandsworth", "croydon", "merton"),
    "southwark": ("lambeth", "lewisham"),
    "lewisham": ("southwark", "greenwich", "bromley"),
    "greenwich": ("lewisham", "bexley", "bromley"),
    "bromley": ("croydon", "lewisham", "greenwich", "bexley"),
    "bexley": ("greenwich", "bromley"),
    "merton": ("wandsworth", "sutton", "croydon", "lambeth"),
    "sutton": ("merton", "croydon"),
    "wandsworth": ("lambeth", "merton"),
}
# Residential schools and children's homes are often outside London: Kent, Surrey, Sussex.
OUT_OF_REGION: tuple[tuple[str, float, float], ...] = (
    ("TN9", 51.195, 0.274), ("ME14", 51.281, 0.531), ("RH1", 51.240, -0.170), ("GU1", 51.240, -0.570),
    ("KT17", 51.333, -0.265), ("BN1", 50.830, -0.137), ("DA1", 51.445, 0.216), ("RH10", 51.113, -0.186),
    ("TN13", 51.275, 0.190), ("CT1", 51.280, 1.080),
)
INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # letters a real inward code may use

NEEDS_INDICATORS = ("physical_health", "emotional_health", "relationships", "risk_taking", "learning_disability",
                    "educational_progress", "self_regulation", "community_engagement", "self_care",
                    "goals_and_aspirations", "voice", "identity")

# Primary need of pupils with an EHCP in specialist provision (roughly DfE's shares).
SCHOOL_NEEDS = {"ASD": 40, "SEMH": 26, "SLCN": 11, "MLD": 5, "SLD": 5, "PMLD": 2, "PD": 3, "HI": 2, "VI": 1,
                "MSI": 0.5, "SPLD": 2, "OTH": 1.5}
CARE_NEEDS = {"SEMH": 66, "ASD": 20, "SLD": 6, "MLD": 5, "PD": 2, "OTH": 1}
CO_OCCURRING: dict[str, tuple[str, ...]] = {
    "ASD": ("SLCN", "SEMH", "MLD"), "SEMH": ("ASD", "SLCN", "SPLD"), "SLCN": ("ASD", "MLD"),
    "MLD": ("SLCN", "SPLD"), "SLD": ("PMLD", "ASD", "PD"), "PMLD": ("SLD", "PD", "MSI"),
    "PD": ("SLCN", "MLD"), "HI": ("SLCN",), "VI": ("MSI",), "MSI": ("VI", "HI"), "SPLD": ("SLCN", "SEMH"),
    "OTH": ("SEMH",),
}
# Valuing Care indicators each need tends to raise.
NEED_PROFILE_EMPHASIS: dict[str, tuple[str, ...]] = {
    "ASD": ("self_regulation", "relationships", "community_engagement", "voice"),
    "SEMH": ("emotional_health", "relationships", "risk_taking", "self_regulation", "identity"),
    "SLCN": ("voice", "relationships", "educational_progress"),
    "MLD": ("learning_disability", "educational_progress", "self_care"),
    "SLD": ("learning_disability", "self_care", "voice", "physical_health"),
    "PMLD": ("physical_health", "learning_disability", "self_care", "voice"),
    "PD": ("physical_health", "self_care", "community_engagement"),
    "HI": ("voice", "community_engagement"), "VI": ("community_engagement", "self_care"),
    "MSI": ("voice", "physical_health", "self_care"), "SPLD": ("educational_progress", "goals_and_aspirations"),
    "OTH": ("emotional_health", "educational_progress"),
}

# Weekly fee bands in pence (DESIGN.md: money is integer pence).
FEE_BANDS: dict[str, tuple[int, int]] = {
    "day": (80_000, 250_000),
    "residential_38": (300_000, 800_000),
    "residential_52": (300_000, 800_000),
    "childrens_home": (400_000, 1_200_000),
    "foster_care": (75_000, 160_000),
}

NAME_STEMS = (
    "Ashdown", "Beacon", "Birchwood", "Bramblefield", "Cedars", "Chestnut Grove", "Elmhurst", "Fairlight",
    "Foxgrove", "Hawthorn", "Hazelwood", "Heathside", "Hillcrest", "Kestrel", "Larkspur", "Linden", "Maplewood",
    "Meadowbank", "Millbrook", "Northfield", "Oakfield", "Orchard", "Parkview", "Pinewood", "Ravensbourne",
    "Rosewood", "Rowan", "Sandhurst", "Southfield", "Springfield", "Sycamore", "Thornhill", "Wandle",
    "Westbrook", "Willowdene", "Woodside", "Greenacre", "Brookside", "Lime Tree", "Hollybank", "Riverside",
    "Oaklands", "Ferndale", "Highgrove", "Bluebell", "Kingfisher", "Harbour", "Ivydene", "Lavender",
    "Mulberry", "Nightingale", "Old Forge", "Primrose", "Quarry Hill", "Redwood", "Stanmore", "Tall Trees",
    "Upfield", "Valley", "Walnut", "Yew Tree", "Amberley", "Bellingham", "Crofton", "Downsview", "Eden Park",
)
NAME_SUFFIXES: dict[str, tuple[str, ...]] = {
    "independent_special_school": ("School", "Academy", "Independent School", "Learning Centre", "House School"),
    "non_maintained_special_school": ("School", "College School", "Trust School"),
    "specialist_college": ("College", "Specialist College", "Futures College"),
    "childrens_home": ("House", "Lodge", "Children's Home", "Cottage"),
    "fostering_agency": ("Fostering", "Family Placements", "Foster Care", "Families"),
}
KIND_MIX = (("independent_special_school", 0.42), ("non_maintained_special_school", 0.12),
            ("specialist_college", 0.10), ("childrens_home", 0.22), ("fostering_agency", 0.14))

OUTCOMES: dict[str, tuple[str, ...]] = {
    "ASD": ("Attend school full time by spring term", "Use a communication aid at home and school",
            "Manage transitions between lessons with a visual timetable", "Take part in one after-school club",
            "Travel to school independently by Year 11"),
    "SEMH": ("Attend school full time by spring term", "Build a trusting relationship with one key adult",
             "Reduce exclusions to none this year", "Re-engage with maths and English at GCSE level",
             "Name and manage feelings with a trusted adult"),
    "SLCN": ("Use a communication aid at home", "Speak with peers in small-group work",
             "Follow two-step instructions in class", "Read at age-expected level by end of Key Stage 3"),
    "care": ("Remain in one stable home for at least two years", "Keep regular contact with siblings",
             "Attend school every day", "Register with a GP and dentist and attend checks",
             "Prepare for independence: cooking, budgeting, travel", "Stay close to current school"),
    "other": ("Make progress towards independent living skills", "Access the curriculum with specialist support",
              "Develop self-care routines", "Move into supported internship at 19"),
}
OFFER_NOTES: dict[str, tuple[str, ...]] = {
    "day": ("Place in our specialist unit; SALT and OT on site", "Class of 8 with two TAs; transport can be arranged",
            "Small group teaching; therapy team in-house", "Transition visits available the week before start"),
    "residential": ("38-week residential place with weekend family time", "Waking night staff; therapy on site",
                    "Residential place with on-site education and therapies"),
    "childrens_home": ("Solo placement available initially, moving to a two-bed home",
                       "Three-bed home with staffing 2:1 by day; on-site education",
                       "Therapeutic home with clinical psychologist support"),
    "foster_care": ("Experienced carers with therapeutic training; near current school",
                    "Long-term carers able to support family time", "Parent and child placement not required; single placement"),
}
DECLINE_REASONS = (("no_capacity", 45), ("cannot_meet_needs", 35), ("outside_area", 12), ("other", 8))
DECLINE_NOTES = ("Matching staff team not available until next term", "Current group dynamics would not suit",
                 "Awaiting Ofsted registration variation", "Would need a solo placement we cannot staff")
JUSTIFICATIONS = (
    "Parental preference: the family visited and chose this school, which is closer to the child's grandparents",
    "First-tier Tribunal (SEND) order names this school in Section I of the EHCP",
    "Sibling already placed with this provider; keeping the children together",
    "Top-ranked provider cannot offer the therapy hours in Section F; this offer can",
    "Continuity of education: the child can keep their current tutor and peer group",
    "Shorter journey: the top-ranked place would mean 90 minutes' travel each way",
)
WITHDRAW_REASONS = (
    "Needs now met by an in-borough resourced provision after annual review",
    "Family moved out of the borough; referral passed to the new local authority",
    "Placement secured with the borough's in-house foster carers",
    "Child returned home with a package of family support",
)


class DemoError(RuntimeError):
    """The demo could not continue: a service answered something it should not have."""


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


def _weighted(rng: random.Random, weights: dict[str, float] | Sequence[tuple[str, float]]) -> str:
    items = list(weights.items()) if isinstance(weights, dict) else list(weights)
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


def _round_fee(pence: float, band: tuple[int, int]) -> int:
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
            primary = _weighted(rng, SCHOOL_NEEDS)
        elif kind == "childrens_home":
            primary = _weighted(rng, CARE_NEEDS)
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
            base_fees[ptype] = _round_fee(centre, FEE_BANDS[ptype])

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
    inspections = [{"framework": "ofsted_legacy", "overall": _legacy_grade(rng, tier),
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
        borough = _weighted(rng, demand)
        sequence[borough] += 1
        ptype = _weighted(rng, {"day": 52, "residential_38": 8, "residential_52": 7, "childrens_home": 19,
                                "foster_care": 14})
        care = ptype in ("childrens_home", "foster_care")
        primary = _weighted(rng, CARE_NEEDS if care else SCHOOL_NEEDS)
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
        scenario = _weighted(rng, {"award": 72, "open": 11, "withdraw": 8, "close": 9})
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


# --------------------------------------------------------------------------- HTTP


class Unexpected(DemoError):
    def __init__(self, method: str, url: str, response: httpx.Response) -> None:
        self.status = response.status_code
        self.body = response.text[:600]
        super().__init__(f"{method} {url} -> {response.status_code}: {self.body}")


@dataclass
class Api:
    client: httpx.AsyncClient
    base_url: Callable[[str], str]
    seed: int
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(HTTP_CONCURRENCY))
    requests: int = 0
    tally: Counter[str] = field(default_factory=Counter)

    async def send(self, method: str, service: str, path: str, token: str | None, body: Any = None,
                   key: str | None = None, params: dict[str, Any] | None = None) -> httpx.Response:
        """One request; transport errors and 5xx are retried with the same Idempotency-Key."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        if key is not None:
            headers["idempotency-key"] = f"demo-{self.seed}-{key}"
        url = f"{self.base_url(service)}{path}"
        for attempt in range(5):
            try:
                async with self.gate:
                    self.requests += 1
                    response = await self.client.request(method, url, json=body, headers=headers, params=params)
            except httpx.TransportError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * 2 ** attempt)
                continue
            shape = "/".join("{id}" if len(part) == 36 else part for part in path.split("/"))
            self.tally[f"{method} {service}{shape} {response.status_code}"] += 1
            if response.status_code >= 500 and attempt < 4:
                await asyncio.sleep(0.2 * 2 ** attempt)
                continue
            wait = _retry_after(response) if response.status_code == 429 else None
            if wait is not None and wait <= RATE_LIMIT_PATIENCE_SECONDS and attempt < 4:
                await asyncio.sleep(wait)  # a rate limit (e.g. a second demo within a minute): wait it out
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def call(self, method: str, service: str, path: str, token: str | None, body: Any = None, *,
                   key: str | None = None, ok: Iterable[int] = (200, 201, 202, 204),
                   params: dict[str, Any] | None = None) -> Any:
        response = await self.send(method, service, path, token, body, key, params)
        if response.status_code not in tuple(ok):
            raise Unexpected(method, f"{service}{path}", response)
        return response.json() if response.content else None

    async def call_when_ready(self, method: str, service: str, path: str, token: str, body: Any = None, *,
                              key: str, retry_rules: Iterable[str], first_delay: float = 0.2,
                              max_delay: float = 1.0) -> Any:
        """A write that may be answered 409 + Retry-After while an event is still on its way.

        Each attempt carries its own Idempotency-Key: a 409 is a final answer for a key.
        """
        retry_rules = set(retry_rules) | {"concurrency"}
        started = time.monotonic()
        delay = first_delay
        attempt = 0
        while True:
            response = await self.send(method, service, path, token, body, f"{key}:{attempt}")
            if response.status_code < 400:
                return response.json() if response.content else None
            rule = _problem_rule(response)
            waiting = response.status_code == 409 and (
                rule in retry_rules or "retry-after" in response.headers
                or "Concurrent" in (_problem(response).get("title") or ""))
            if not waiting or time.monotonic() - started > EVENT_WAIT_SECONDS:
                raise Unexpected(method, f"{service}{path}", response)
            retry_after = float(response.headers.get("retry-after") or delay)
            await asyncio.sleep(min(retry_after, delay))
            delay = min(max_delay, delay * 1.5)
            attempt += 1


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _problem_rule(response: httpx.Response) -> str | None:
    rule = _problem(response).get("rule")
    return str(rule) if rule else None


async def _poll(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = EVENT_WAIT_SECONDS) -> T:
    started = time.monotonic()
    delay = 0.15
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() - started > timeout:
            raise DemoError(f"gave up after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(1.0, delay * 1.5)


# --------------------------------------------------------------------------- webhook portals


class WebhookReceiver:
    """A few provider portals and borough systems, in one tiny HTTP server that checks signatures."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.received: Counter[str] = Counter()
        self.verified = 0
        self.rejected = 0
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self.base = ""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        return self.base

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            await asyncio.sleep(0.05)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                self._record(path, headers, body)
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError,
                asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> None:
        from standardwebhooks import Webhook

        try:
            self.received[str(json.loads(body).get("type"))] += 1
        except ValueError:
            self.received["unparseable"] += 1
        secret = self.secrets.get(path.rsplit("/", 1)[-1])
        try:
            if secret is None:
                raise ValueError("unknown endpoint")
            Webhook(secret).verify(body, headers)
            self.verified += 1
        except Exception:
            self.rejected += 1


# --------------------------------------------------------------------------- the demo


class Demo:
    def __init__(self, api: Api, seed: int, settings: Settings, progress: Progress, today: date) -> None:
        self.api = api
        self.seed = seed
        self.settings = settings
        self.progress = progress
        self.today = today
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.commissioner = mint_token(settings, "commissioner", "region")
        self.borough_tokens = {code: mint_token(settings, "borough", code) for code in BOROUGHS}
        self._provider_tokens: dict[str, str] = {}
        self.providers: list[ProviderPlan] = []
        self.by_id: dict[str, ProviderPlan] = {}
        self.standing_offers: Counter[int] = Counter()  # provider index -> offers on referrals left open
        self.receiver = WebhookReceiver()

    def provider_token(self, provider_id: str) -> str:
        if provider_id not in self._provider_tokens:
            self._provider_tokens[provider_id] = mint_token(self.settings, "provider", provider_id)
        return self._provider_tokens[provider_id]

    # ---- phase 1: enrolment

    async def preflight(self, plans: list[ProviderPlan]) -> None:
        """Refuse to fill a system that already holds this seed's region (its URNs)."""
        urns = {p.urn for p in plans}
        offset = 0
        while True:
            page = await self.api.call("GET", "enrolment", "/providers", self.commissioner,
                                       params={"limit": 1000, "offset": offset})
            clash = sorted(urns & {str(item.get("urn")) for item in page["items"]})
            if clash:
                raise DemoError(f"this system already holds the demo region of seed {self.seed} (URN {clash[0]} "
                                "is enrolled): use another --seed, or start placematch with an empty --data-dir")
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return

    async def enrol(self, plans: list[ProviderPlan]) -> None:
        self.providers = plans
        task = self.progress.add_task("Enrolling providers", total=len(plans))

        async def one(plan: ProviderPlan) -> None:
            await self.enrol_one(plan)
            self.progress.advance(task)

        async with asyncio.TaskGroup() as group:
            for plan in plans:
                group.create_task(one(plan))
        self.by_id = {p.id: p for p in plans if p.id}

    async def enrol_one(self, plan: ProviderPlan) -> None:
        api, token = self.api, self.commissioner
        response = await api.send("POST", "enrolment", "/providers", None, plan.application(),
                                  key=f"provider:{plan.urn}")
        if response.status_code == 409 and _problem_rule(response) == "duplicate_urn":
            raise DemoError(f"provider URN {plan.urn} is already enrolled: this system already holds the demo "
                            f"region for seed {self.seed}; use another --seed or an empty --data-dir")
        if response.status_code != 201:
            raise Unexpected("POST", "enrolment/providers", response)
        plan.id = response.json()["id"]
        self.counts["providers_applied"] += 1
        for n, inspection in enumerate(plan.inspections):
            await api.call("POST", "enrolment", f"/providers/{plan.id}/inspections", token, inspection,
                           key=f"inspection:{plan.urn}:{n}")
            self.counts["inspections"] += 1
        for n, outcomes in enumerate(plan.outcomes):
            await api.call("POST", "enrolment", f"/providers/{plan.id}/outcomes", token, outcomes,
                           key=f"outcomes:{plan.urn}:{n}")
            self.counts["outcomes_recorded"] += 1
        if plan.decision == "approve":
            await api.call("POST", "enrolment", f"/providers/{plan.id}/approve", token,
                           {"reason": "Accreditation complete: DBS, insurance, finance and safeguarding checked"},
                           key=f"approve:{plan.urn}")
            self.counts["providers_approved"] += 1
        elif plan.decision == "reject":
            await api.call("POST", "enrolment", f"/providers/{plan.id}/reject", token,
                           {"reason": plan.reject_reason}, key=f"reject:{plan.urn}")
            self.counts["providers_rejected"] += 1
        else:
            self.counts["providers_pending"] += 1

    # ---- phase 2: portals subscribe to webhooks

    async def subscribe(self, watched: list[ProviderPlan]) -> None:
        base = await self.receiver.start()
        provider_types = ["referral.invited", "shortlist.updated", "offer.accepted", "offer.not_selected",
                          "provider.suspended"]
        borough_types = ["referral.no_eligible_providers", "shortlist.updated", "referral.closed_unfilled"]
        subscribers = [(p.id, "provider", provider_types, p.email) for p in watched if p.id] + [
            (code, "borough", borough_types, f"placements@{code}.gov.example") for code in ("croydon", "lambeth")]
        for slot, (tenant, role, types, email) in enumerate(subscribers):
            token = self.provider_token(tenant) if role == "provider" else self.borough_tokens[tenant]
            created = await self.api.call("POST", "notification", "/subscriptions", token,
                                          {"url": f"{base}/hooks/{slot}", "event_types": types,
                                           "contact_email": email}, key=f"subscription:{slot}")
            self.receiver.secrets[str(slot)] = created["secret"]
            self.counts["subscriptions"] += 1

    # ---- phase 3: referrals

    async def run_referrals(self, plans: list[ReferralPlan]) -> None:
        task = self.progress.add_task("Referrals, offers and awards", total=len(plans))
        if not plans:
            return
        approved = sum(1 for p in self.providers if p.decision == "approve")
        # The first referral goes alone: once matching has evaluated it against every approved
        # provider, matching has seen every approval, and later referrals meet the full directory.
        await self.guarded(plans[0], barrier=approved)
        self.progress.advance(task)
        flows = asyncio.Semaphore(REFERRAL_FLOWS)

        async def one(plan: ReferralPlan) -> None:
            async with flows:
                await self.guarded(plan)
            self.progress.advance(task)

        await asyncio.gather(*(one(p) for p in plans[1:]))

    async def guarded(self, plan: ReferralPlan, barrier: int | None = None) -> None:
        try:
            await self.referral_flow(plan, barrier)
        except (DemoError, httpx.HTTPError) as error:
            self.counts["errors"] += 1
            self.errors.append(f"referral #{plan.index} ({plan.borough}, {plan.scenario}): {error}")

    async def invited(self, referral_id: str, token: str, barrier: int | None) -> list[str]:
        async def probe() -> list[dict[str, Any]] | None:
            response = await self.api.send("GET", "matching", f"/referrals/{referral_id}/eligible-providers", token,
                                           params={"all": "true"})
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise Unexpected("GET", f"matching/referrals/{referral_id}/eligible-providers", response)
            providers = response.json()["providers"]
            if barrier is not None and len(providers) < barrier:
                return None
            return list(providers)

        results = await _poll(probe, f"matching to evaluate referral {referral_id}")
        return [r["provider_id"] for r in results if r.get("invited")]

    async def referral_flow(self, plan: ReferralPlan, barrier: int | None = None) -> None:
        api = self.api
        rng = random.Random(f"{self.seed}:referral:{plan.index}")
        token = self.borough_tokens[plan.borough]
        body = dict(plan.body)
        if plan.preferred is not None:
            body["preferred_provider_id"] = self.providers[plan.preferred].id
        created = await api.call("POST", "referral", "/referrals", token, body, key=f"referral:{plan.index}")
        rid = plan.id = created["id"]
        self.counts["referrals_raised"] += 1
        invited_ids = await self.invited(rid, token, barrier)
        invited = sorted((self.by_id[i] for i in invited_ids if i in self.by_id), key=lambda p: p.index)
        self.counts["invitations"] += len(invited)

        if plan.amend:
            changes: dict[str, Any] = {"outcomes": [*body["outcomes"], "Review placement at six weeks with family"]}
            if body["max_travel_km"] is not None:
                changes["max_travel_km"] = body["max_travel_km"] + 10
            await api.call("POST", "referral", f"/referrals/{rid}/amend", token, changes, key=f"amend:{plan.index}")
            self.counts["referrals_amended"] += 1

        if not invited and plan.scenario != "withdraw":
            await api.call("POST", "referral", f"/referrals/{rid}/close", token, key=f"close:{plan.index}")
            self.counts["referrals_no_eligible"] += 1
            self.counts["referrals_closed_unfilled"] += 1
            return

        if invited:
            await self.invitations_known(rid, invited[0])
        offers: dict[str, ProviderPlan] = {}
        silent: list[ProviderPlan] = []
        for provider in invited:
            roll, decline_roll, fee_roll, note_roll = rng.random(), rng.random(), rng.random(), rng.random()
            preferred = plan.preferred == provider.index
            if plan.scenario == "close":
                action = "decline" if decline_roll < 0.6 else "silent"
            elif preferred or (len(offers) < 6 and roll < 0.5):
                action = "offer"
            else:
                action = "decline" if decline_roll < 0.3 else "silent"
            if action == "offer":
                offer_id = await self.offer(plan, rid, provider, fee_roll, note_roll)
                offers[offer_id] = provider
            elif action == "decline":
                await self.decline(plan, rid, provider, rng)
            else:
                silent.append(provider)
        # Awards need an offer, and a justified award an alternative to the top one.
        wanted = (2 if plan.justify else 1) if plan.scenario in ("award", "open") else 0
        for provider in silent[:max(0, wanted - len(offers))]:
            offers[await self.offer(plan, rid, provider, rng.random(), rng.random())] = provider
        if plan.scenario in ("award", "open") and not offers:  # every invited provider declined
            await api.call("POST", "referral", f"/referrals/{rid}/close", token, key=f"close:{plan.index}")
            self.counts["referrals_closed_unfilled"] += 1
            return

        if len(offers) > 2 and rng.random() < 0.25:
            offer_id = sorted(offers, key=lambda o: offers[o].index)[-1]
            provider = offers.pop(offer_id)
            await api.call("POST", "referral", f"/referrals/{rid}/offers/{offer_id}/withdraw",
                           self.provider_token(provider.id or ""),
                           {"reason": "Place taken by a child from another local authority"},
                           key=f"withdraw-offer:{plan.index}")
            self.counts["offers_withdrawn"] += 1

        if plan.scenario == "withdraw":
            await api.call("POST", "referral", f"/referrals/{rid}/withdraw", token,
                           {"reason": rng.choice(WITHDRAW_REASONS)}, key=f"withdraw:{plan.index}")
            self.counts["referrals_withdrawn"] += 1
        elif plan.scenario == "close":
            await api.call("POST", "referral", f"/referrals/{rid}/close", token, key=f"close:{plan.index}")
            self.counts["referrals_closed_unfilled"] += 1
        elif plan.scenario == "open":
            self.counts["referrals_open"] += 1
            for provider in offers.values():
                self.standing_offers[provider.index] += 1
        else:
            await self.award(plan, rid, token, offers, rng)

    async def invitations_known(self, rid: str, provider: ProviderPlan) -> None:
        """Wait until the referral service has learned the invitations (an invited provider can read
        the referral): cheaper for everyone than offers answered 409 invitation_pending."""
        token = self.provider_token(provider.id or "")

        async def probe() -> bool | None:
            response = await self.api.send("GET", "referral", f"/referrals/{rid}", token)
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise Unexpected("GET", f"referral/referrals/{rid}", response)
            return True

        await _poll(probe, f"the referral service to learn who is invited to {rid}")

    async def offer(self, plan: ReferralPlan, rid: str, provider: ProviderPlan, fee_roll: float,
                    note_roll: float) -> str:
        ptype = plan.body["placement_type"]
        intensity = sum(plan.body["needs_profile"].values()) / 36  # 0..1
        base = provider.base_fees.get(ptype) or sum(FEE_BANDS[ptype]) // 2
        fee = _round_fee(base * (0.9 + 0.2 * intensity) * (0.92 + 0.18 * fee_roll), FEE_BANDS[ptype])
        start = date.fromisoformat(plan.body["required_from"])
        if fee_roll > 0.85:
            start += timedelta(days=14)
        group = "residential" if ptype.startswith("residential") else ptype
        notes = OFFER_NOTES[group][int(note_roll * len(OFFER_NOTES[group]))]
        created = await self.api.call_when_ready(
            "POST", "referral", f"/referrals/{rid}/offers", self.provider_token(provider.id or ""),
            {"weekly_fee_pence": fee, "start_date": start.isoformat(), "notes": notes},
            key=f"offer:{plan.index}:{provider.index}", retry_rules=("invitation_pending",))
        self.counts["offers"] += 1
        return str(created["id"])

    async def decline(self, plan: ReferralPlan, rid: str, provider: ProviderPlan, rng: random.Random) -> None:
        reason = _weighted(rng, DECLINE_REASONS)
        body: dict[str, Any] = {"reason": reason}
        if reason == "other":
            body["note"] = rng.choice(DECLINE_NOTES)
        await self.api.call_when_ready(
            "POST", "referral", f"/referrals/{rid}/decline", self.provider_token(provider.id or ""), body,
            key=f"decline:{plan.index}:{provider.index}", retry_rules=("invitation_pending",))
        self.counts["declines"] += 1

    async def award(self, plan: ReferralPlan, rid: str, token: str, offers: dict[str, ProviderPlan],
                    rng: random.Random) -> None:
        standing = set(offers)

        async def ranked() -> list[dict[str, Any]] | None:
            data = await self.api.call("GET", "matching", f"/referrals/{rid}/shortlist", token)
            # Current when it ranks only standing offers and leaves none out (withdrawn ones are
            # listed as excluded) - the rule the referral service applies before an award.
            ranked = {e["offer_id"] for e in data["entries"]}
            excluded = {x["offer_id"] for x in data["excluded"]}
            return list(data["entries"]) if ranked and ranked <= standing <= ranked | excluded else None

        entries = await _poll(ranked, f"the shortlist of referral {rid} to rank {len(standing)} offers")
        top = entries[0]
        chosen, justification = top, None
        preferred_id = self.providers[plan.preferred].id if plan.preferred is not None else None
        preferred_entry = next((e for e in entries if e["provider_id"] == preferred_id), None)
        if preferred_entry is not None and preferred_entry is not top:
            chosen = preferred_entry
            justification = (f"Parental preference for {self.by_id[preferred_entry['provider_id']].name}, "
                             "named in the EHCP after the family's visit")
        elif len(entries) > 1 and plan.justify:
            chosen = entries[1 if len(entries) == 2 or rng.random() < 0.7 else 2]
            justification = rng.choice(JUSTIFICATIONS)
        body: dict[str, Any] = {"offer_id": chosen["offer_id"]}
        if justification:
            body["justification"] = justification
        await self.api.call_when_ready("POST", "referral", f"/referrals/{rid}/award", token, body,
                                       key=f"award:{plan.index}", retry_rules=("shortlist_pending",),
                                       first_delay=0.5, max_delay=2.0)
        self.counts["referrals_awarded"] += 1
        if justification:
            self.counts["awards_with_justification"] += 1

    # ---- phase 4: the commissioners act on providers

    async def oversee(self, watched: list[ProviderPlan]) -> None:
        """Suspensions (one at once for safeguarding, one automatic after an inadequate inspection),
        a suspension lifted, and profile changes. Done after the referrals so that open shortlists
        show the suspended providers' offers excluded."""
        task = self.progress.add_task("Suspensions and updates", total=5)
        api, token = self.api, self.commissioner
        approved = [p for p in self.providers if p.decision == "approve" and p.id]
        # The providers with most offers on referrals still open, so their shortlists change.
        chosen: list[ProviderPlan | None] = [
            *sorted(approved, key=lambda p: (-self.standing_offers[p.index], p.index)), None, None, None]
        manual, automatic, temporary = chosen[:3]
        if manual is not None:
            await api.call("POST", "enrolment", f"/providers/{manual.id}/suspend", token,
                           {"reason": "Safeguarding concern referred to the LADO; suspended pending investigation"},
                           key=f"suspend:{manual.urn}")
            self.counts["providers_suspended"] += 1
            self.counts["providers_approved"] -= 1
        self.progress.advance(task)
        if automatic is not None:
            await api.call("POST", "enrolment", f"/providers/{automatic.id}/inspections", token,
                           {"framework": "ofsted_legacy", "overall": "inadequate",
                            "inspected_on": (self.today - timedelta(days=2)).isoformat()},
                           key=f"inspection:{automatic.urn}:inadequate")
            self.counts["inspections"] += 1
            self.counts["providers_suspended"] += 1
            self.counts["providers_approved"] -= 1
        self.progress.advance(task)
        if temporary is not None:
            await api.call("POST", "enrolment", f"/providers/{temporary.id}/suspend", token,
                           {"reason": "Employer's liability insurance certificate lapsed"},
                           key=f"suspend:{temporary.urn}")
            await api.call("POST", "enrolment", f"/providers/{temporary.id}/reinstate", token,
                           {"reason": "Renewed insurance certificate received and checked"},
                           key=f"reinstate:{temporary.urn}")
            self.counts["providers_reinstated"] += 1
        self.progress.advance(task)
        # A provider portal reports it is full; the commissioners widen another's area.
        full = next((p for p in approved if p not in (manual, automatic, temporary) and p.capacity > 0), None)
        if full is not None:
            await api.call("PATCH", "enrolment", f"/providers/{full.id}", self.provider_token(full.id or ""),
                           {"capacity": 0}, key=f"full:{full.urn}")
            self.counts["provider_updates"] += 1
        self.progress.advance(task)
        widened = next((p for p in approved if p.boroughs_served and p not in (manual, automatic)), None)
        if widened is not None:
            await api.call("PATCH", "enrolment", f"/providers/{widened.id}", token, {"boroughs_served": []},
                           key=f"widen:{widened.urn}")
            self.counts["provider_updates"] += 1
        self.progress.advance(task)


def _watched(plans: list[ProviderPlan]) -> list[ProviderPlan]:
    """The providers whose portals take webhooks: the first approved of each kind."""
    seen: dict[str, ProviderPlan] = {}
    for plan in plans:
        if plan.decision == "approve" and plan.kind not in seen:
            seen[plan.kind] = plan
    return list(seen.values())


COUNT_ROWS: tuple[tuple[str, str], ...] = (
    ("providers_applied", "providers applied"), ("providers_approved", "providers approved (active)"),
    ("providers_rejected", "providers rejected"), ("providers_suspended", "providers suspended"),
    ("providers_pending", "applications awaiting decision"), ("providers_reinstated", "suspensions lifted"),
    ("inspections", "inspections recorded"), ("outcomes_recorded", "outcome returns recorded"),
    ("referrals_raised", "referrals raised"), ("referrals_awarded", "referrals awarded"),
    ("awards_with_justification", "  of which not the top offer (justified)"),
    ("referrals_withdrawn", "referrals withdrawn"), ("referrals_closed_unfilled", "referrals closed unfilled"),
    ("referrals_no_eligible", "  of which no eligible provider"), ("referrals_open", "referrals left open"),
    ("referrals_amended", "referrals amended"), ("invitations", "invitations"), ("offers", "offers"),
    ("offers_withdrawn", "offers withdrawn"), ("declines", "declines"), ("subscriptions", "webhook subscriptions"),
    ("webhooks_received", "webhooks received (signature checked)"), ("errors", "errors"),
)


def counts_table(counts: dict[str, int], seconds: float, requests: int) -> Table:
    table = Table(title=f"placematch demo: {requests} requests in {seconds:.1f}s")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, label in COUNT_ROWS:
        style = "red" if key == "errors" and counts.get(key) else None
        table.add_row(label, str(counts.get(key, 0)), style=style)
    return table


async def run_demo(base_url: Callable[[str], str], *, seed: int = 7, referrals: int = 300, providers: int = 100,
                   console: Console | None = None) -> dict[str, int]:
    """Fill the running system behind `base_url` (service name -> "http://host:port") with a region.

    Returns the counts of what was done (also printed as a table). Raises `DemoError` when the
    region cannot be set up (e.g. the system already holds the providers of this seed); a
    referral that fails is counted under `errors` and described on the console, and the rest go on.
    """
    console = console or Console()
    settings = Settings()
    today = datetime.now(timezone.utc).date()
    started = time.monotonic()
    provider_plans = plan_providers(seed, providers, today)
    referral_plans = plan_referrals(seed, referrals, provider_plans, today)
    limits = httpx.Limits(max_connections=HTTP_CONCURRENCY * 2, max_keepalive_connections=HTTP_CONCURRENCY * 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as client:
        api = Api(client, base_url, seed)
        for service in ("enrolment", "referral", "matching", "notification"):
            try:
                await api.call("GET", service, "/health", None)
            except httpx.HTTPError as error:
                raise DemoError(f"{service} does not answer at {base_url(service)}: is `placematch up` "
                                f"running? ({error!r})") from error
        columns = (TextColumn("{task.description:<30}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            demo = Demo(api, seed, settings, progress, today)
            try:
                await demo.preflight(provider_plans)
                await demo.enrol(provider_plans)
                watched = _watched(provider_plans)
                await demo.subscribe(watched)
                await demo.run_referrals(referral_plans)
                await demo.oversee(watched)
                await asyncio.sleep(1.0)  # let the last notifications reach the portals
            finally:
                await demo.receiver.stop()
    demo.counts["webhooks_received"] = demo.receiver.verified
    if demo.receiver.rejected:
        demo.counts["webhooks_bad_signature"] = demo.receiver.rejected
    for line in demo.errors[:10]:
        console.print(f"[red]{line}[/]")
    if len(demo.errors) > 10:
        console.print(f"[red]… and {len(demo.errors) - 10} more[/]")
    counts = {key: int(demo.counts.get(key, 0)) for key, _ in COUNT_ROWS}
    counts.update({k: int(v) for k, v in demo.counts.items() if k not in counts})
    console.print(counts_table(counts, time.monotonic() - started, api.requests))
    return counts
