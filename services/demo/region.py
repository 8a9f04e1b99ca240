"""The demo region: boroughs and their districts, needs, fees, names, reasons (data only)."""
from __future__ import annotations

from typing import Any

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
                    "Long-term carers able to support family time",
                    "Parent and child placement not required; single placement"),
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
