"""Form posts turned into the API's JSON bodies; a value that cannot even be typed is an error on
its field here, everything else is the API's to judge (its problem+json comes back to the field)."""
from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import FormData

from shared.vocabulary import NEEDS_INDICATORS

INDICATOR_LABELS = {
    "physical_health": "Physical health", "emotional_health": "Emotional health", "relationships": "Relationships",
    "risk_taking": "Risk-taking behaviour", "learning_disability": "Learning disability",
    "educational_progress": "Educational progress", "self_regulation": "Self-regulation",
    "community_engagement": "Community engagement", "self_care": "Self-care",
    "goals_and_aspirations": "Goals and aspirations", "voice": "Voice (being heard)", "identity": "Identity",
}
INDICATOR_DOMAINS = [("Healthy", ["physical_health", "emotional_health"]),
                     ("Safe", ["relationships", "risk_taking"]),
                     ("Ambitious", ["learning_disability", "educational_progress"]),
                     ("Resilient", ["self_regulation", "community_engagement"]),
                     ("Independent", ["self_care", "goals_and_aspirations"]),
                     ("Happy", ["voice", "identity"])]
assert [i for _, group in INDICATOR_DOMAINS for i in group] == list(NEEDS_INDICATORS)

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def values_of(form: FormData) -> dict[str, Any]:
    """What was typed, to put back in the form when it is shown again."""
    values: dict[str, Any] = {k: text(form, k) for k in form}
    values["secondary_needs"] = [v for v in form.getlist("secondary_needs") if isinstance(v, str)]
    return values


def _int(form: FormData, name: str, errors: dict[str, str], label: str) -> int | None:
    raw = text(form, name)
    if not raw:
        return None
    try:
        return int(raw.replace(",", ""))
    except ValueError:
        errors[name] = f"{label} must be a whole number"
        return None


def _float(form: FormData, name: str, errors: dict[str, str], label: str) -> float | None:
    raw = text(form, name)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        errors[name] = f"{label} must be a number, like 51.372"
        return None


def pounds_to_pence(form: FormData, name: str, errors: dict[str, str], label: str) -> int | None:
    raw = text(form, name).replace("£", "").replace(",", "")
    if not raw:
        errors[name] = f"Enter {label.lower()}"
        return None
    try:
        pounds = float(raw)
    except ValueError:
        errors[name] = f"{label} must be an amount in pounds, like 4250 or 4250.50"
        return None
    return round(pounds * 100)


def instant(raw: str) -> str:
    """A deadline: a date alone means 5pm UTC that day."""
    return f"{raw}T17:00:00Z" if _DATE_ONLY.fullmatch(raw) else raw


def referral_body(form: FormData) -> tuple[dict[str, Any], dict[str, str]]:
    errors: dict[str, str] = {}
    body: dict[str, Any] = {
        "child_ref": text(form, "child_ref"), "birth_date": text(form, "birth_date"), "gender": text(form, "gender"),
        "primary_need": text(form, "primary_need"),
        "secondary_needs": [v for v in form.getlist("secondary_needs") if isinstance(v, str)],
        "placement_type": text(form, "placement_type"), "required_from": text(form, "required_from"),
        "offer_deadline": instant(text(form, "offer_deadline")),
        "outcomes": [line.strip() for line in text(form, "outcomes").splitlines() if line.strip()],
        "preferred_provider_id": text(form, "preferred_provider_id") or None,
        "max_travel_km": _int(form, "max_travel_km", errors, "Maximum travel"),
    }
    postcode = text(form, "location.postcode")
    if postcode:
        body["location"] = {"postcode": postcode, "lat": _float(form, "location.lat", errors, "Latitude"),
                            "lon": _float(form, "location.lon", errors, "Longitude")}
    profile: dict[str, int] = {}
    for indicator in NEEDS_INDICATORS:
        score = _int(form, f"needs_profile.{indicator}", errors, INDICATOR_LABELS[indicator])
        if score is None:
            errors.setdefault(f"needs_profile.{indicator}",
                              f"Select a rating for {INDICATOR_LABELS[indicator].lower()}")
        else:
            profile[indicator] = score
    body["needs_profile"] = profile
    return body, errors


def referral_values(referral: dict[str, Any]) -> dict[str, Any]:
    """A referral as the form's values (for amending)."""
    values: dict[str, Any] = {k: referral.get(k) for k in (
        "child_ref", "birth_date", "gender", "primary_need", "placement_type", "required_from",
        "offer_deadline", "preferred_provider_id", "max_travel_km")}
    values["secondary_needs"] = referral.get("secondary_needs") or []
    values["outcomes"] = "\n".join(referral.get("outcomes") or [])
    location = referral.get("location") or {}
    for key in ("postcode", "lat", "lon"):
        values[f"location.{key}"] = location.get(key)
    for indicator, score in (referral.get("needs_profile") or {}).items():
        values[f"needs_profile.{indicator}"] = score
    return values


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The fields of `after` that differ from the referral `before` (what an amendment sends)."""
    found = {}
    for key, value in after.items():
        old = before.get(key)
        if key == "location" and isinstance(old, dict):
            old = {k: old.get(k) for k in ("postcode", "lat", "lon")}
        if value != old:
            found[key] = value
    return found
