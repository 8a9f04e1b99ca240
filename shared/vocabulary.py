"""The partnership's vocabulary, written once: codes, locations and distance, money and scores, instants,
and the notification-request contract every service speaks (shared/EVENTS.md).

Codes are `StrEnum`s, so request models typed with them carry the enums into the OpenAPI documents,
and their values are the strings on the wire (`NeedCode.ASD == "ASD"`).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any, Literal

from shared.aggregate import NewEvent

# --- codes --------------------------------------------------------------------------------------


class NeedCode(StrEnum):
    """DfE SEN primary need codes; also the lots providers enrol in."""

    SPLD = "SPLD"
    MLD = "MLD"
    SLD = "SLD"
    PMLD = "PMLD"
    SEMH = "SEMH"
    SLCN = "SLCN"
    HI = "HI"
    VI = "VI"
    MSI = "MSI"
    PD = "PD"
    ASD = "ASD"
    OTH = "OTH"


class PlacementType(StrEnum):
    DAY = "day"
    RESIDENTIAL_38 = "residential_38"
    RESIDENTIAL_52 = "residential_52"
    CHILDRENS_HOME = "childrens_home"
    FOSTER_CARE = "foster_care"


class ProviderKind(StrEnum):
    INDEPENDENT_SPECIAL_SCHOOL = "independent_special_school"
    NON_MAINTAINED_SPECIAL_SCHOOL = "non_maintained_special_school"
    SPECIALIST_COLLEGE = "specialist_college"
    CHILDRENS_HOME = "childrens_home"
    FOSTERING_AGENCY = "fostering_agency"


class Gender(StrEnum):
    FEMALE = "female"
    MALE = "male"
    NON_BINARY = "non_binary"


class DeclineReason(StrEnum):
    NO_CAPACITY = "no_capacity"
    CANNOT_MEET_NEEDS = "cannot_meet_needs"
    OUTSIDE_AREA = "outside_area"
    OTHER = "other"


class WebhookType(StrEnum):
    """What a subscriber can hear about (shared/EVENTS.md, placematch.notifications)."""

    REFERRAL_INVITED = "referral.invited"
    REFERRAL_NO_ELIGIBLE_PROVIDERS = "referral.no_eligible_providers"
    SHORTLIST_UPDATED = "shortlist.updated"
    OFFER_ACCEPTED = "offer.accepted"
    OFFER_NOT_SELECTED = "offer.not_selected"
    REFERRAL_CLOSED_UNFILLED = "referral.closed_unfilled"
    PROVIDER_SUSPENDED = "provider.suspended"
    # issue 16: the placement service tells the borough and the provider of a placement
    PLACEMENT_STARTED = "placement.started"
    PLACEMENT_ENDED = "placement.ended"
    PLACEMENT_REVIEW_DUE = "placement.review_due"
    FEE_CHANGE_REQUESTED = "fee_change.requested"
    FEE_CHANGE_DECIDED = "fee_change.decided"
    AWARD_COLLAPSED = "award.collapsed"


def values(codes: type[StrEnum]) -> tuple[str, ...]:
    """The wire values of a code set, in declaration order."""
    return tuple(member.value for member in codes)


NEED_CODES: tuple[str, ...] = values(NeedCode)
PLACEMENT_TYPES: tuple[str, ...] = values(PlacementType)
PROVIDER_KINDS: tuple[str, ...] = values(ProviderKind)
GENDERS: tuple[str, ...] = values(Gender)
DECLINE_REASONS: tuple[str, ...] = values(DeclineReason)
WEBHOOK_TYPES: tuple[str, ...] = values(WebhookType)

NEEDS_INDICATORS: tuple[str, ...] = (
    "physical_health", "emotional_health", "relationships", "risk_taking", "learning_disability",
    "educational_progress", "self_regulation", "community_engagement", "self_care", "goals_and_aspirations",
    "voice", "identity",
)
"""The 12 Valuing Care indicators of a needs profile, each rated 0-3."""

# --- money and scores -----------------------------------------------------------------------------

TWO_PLACES = Decimal("0.01")


def two_places(value: Decimal | int | str) -> Decimal:
    """The one rounding rule: Decimal, ROUND_HALF_UP, to 2 places (scores, weights, distances)."""
    return Decimal(value).quantize(TWO_PLACES, rounding=ROUND_HALF_UP)


def whole(value: Decimal) -> int:
    """ROUND_HALF_UP to a whole number (pence)."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def parse_score(value: Any) -> Decimal | None:
    """A score from the wire ("80.00", 80, 80.0) as a 2-place Decimal; floats go through `str`
    so that no binary noise enters; None or "" is no score."""
    if value is None or value == "":
        return None
    return two_places(str(value))


def format_score(value: Decimal | None) -> str | None:
    """A score on the wire: a decimal string with exactly 2 places (`"80.00"`), never a float."""
    return None if value is None else str(two_places(value))


# --- instants -------------------------------------------------------------------------------------

Precision = Literal["microseconds", "seconds"]


def now_utc() -> datetime:
    return datetime.now(UTC)


def format_instant(moment: datetime, precision: Precision = "microseconds") -> str:
    """The one text form of an instant: ISO 8601 in UTC with `Z`, fixed width, so that text order is
    time order. `microseconds` for instants the system records (event times, leases), `seconds` for
    instants people give and read (deadlines, `raised_at`). A naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    if precision == "seconds":
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant (with `Z` or an offset) as an aware UTC datetime."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def age_in_years(birth_date: date, on: date) -> int:
    """Whole years completed on `on` (a birthday counts on the day itself)."""
    years = on.year - birth_date.year
    if (on.month, on.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


# --- locations --------------------------------------------------------------------------------

EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius
_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ?([0-9][A-Z]{2})$")


def normalise_postcode(postcode: str) -> str:
    """Upper case, one space before the inward code (`"cr01nx"` -> `"CR0 1NX"`)."""
    compact = re.sub(r"\s+", "", postcode.upper())
    return f"{compact[:-3]} {compact[-3:]}" if len(compact) > 3 else compact


def parse_postcode(text: str) -> str | None:
    """A UK postcode as typed, in its one written form (`" se1 7pb "` -> `"SE1 7PB"`): upper case, at most
    one space and only before the inward code; None when `text` is not one (`"SE1  7PB"` is not)."""
    match = _POSTCODE.match(text.strip().upper())
    return None if match is None else f"{match.group(1)} {match.group(2)}"


def district_of(postcode: str) -> str | None:
    """The outward code (`"CR0 1NX"` -> `"CR0"`), the location a provider may see; None if it is
    not a UK postcode."""
    match = _POSTCODE.match(normalise_postcode(postcode))
    return None if match is None else match.group(1)


@dataclass(frozen=True)
class Location:
    """A place as the wire carries it: `{"postcode", "lat", "lon"}` (+ `"district"` where derived)."""

    postcode: str | None = None
    lat: float | None = None
    lon: float | None = None

    @property
    def known(self) -> bool:
        """Coordinates are known, so distances can be measured."""
        return self.lat is not None and self.lon is not None

    @property
    def district(self) -> str | None:
        return None if self.postcode is None else district_of(self.postcode)

    @classmethod
    def from_data(cls, raw: Mapping[str, Any] | None) -> Location | None:
        """From an event's or a profile's `location` (already validated); None when absent."""
        if not raw:
            return None
        lat, lon = raw.get("lat"), raw.get("lon")
        return cls(postcode=raw.get("postcode"), lat=None if lat is None else float(lat),
                   lon=None if lon is None else float(lon))

    def to_data(self, *, with_district: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"postcode": self.postcode, "lat": self.lat, "lon": self.lon}
        if with_district:
            data["district"] = self.district
        return data

    def km_to(self, other: Location) -> Decimal | None:
        """Great-circle distance, or None when either end has no coordinates."""
        if not (self.known and other.known):
            return None
        assert self.lat is not None and self.lon is not None and other.lat is not None and other.lon is not None
        return haversine_km(self.lat, self.lon, other.lat, other.lon)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> Decimal:
    """Great-circle distance in km, rounded to 2 places.

    The trigonometry is floating point; rounding the result to 10 m makes the comparison with
    `max_travel_km` reproducible wherever the code runs.
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    km = 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))
    return two_places(repr(km))


# --- the notification-request contract --------------------------------------------------------

NOTIFICATION_REQUESTED = "notification-requested"


@dataclass(frozen=True)
class Recipient:
    role: Literal["provider", "borough"] | str
    tenant: str

    def to_data(self) -> dict[str, str]:
        return {"role": self.role, "tenant": self.tenant}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Recipient:
        """From a recorded `{"role", "tenant"}` (both present)."""
        return cls(role=str(data["role"]), tenant=str(data["tenant"]))


@dataclass(frozen=True)
class NotificationRequest:
    """The `data` of a `notification-requested` event on placematch.notifications: matching writes
    it, notification reads it. `data` is already redacted for the recipient."""

    notification_id: str
    webhook_type: str
    recipient: Recipient
    email: str | None
    referral_id: str | None
    data: dict[str, Any]

    def to_data(self) -> dict[str, Any]:
        return {
            "notification_id": self.notification_id,
            "webhook_type": self.webhook_type,
            "recipient": self.recipient.to_data(),
            "email": self.email,
            "referral_id": self.referral_id,
            "data": self.data,
        }

    def as_event(self) -> NewEvent:
        return NewEvent(NOTIFICATION_REQUESTED, self.to_data())

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> NotificationRequest:
        """Parse without judging: the reader checks what it requires (notification refuses an unknown
        webhook type or a missing recipient as a poison event)."""
        recipient = data.get("recipient") or {}
        return cls(
            notification_id=str(data.get("notification_id") or ""),
            webhook_type=str(data.get("webhook_type") or ""),
            recipient=Recipient(str(recipient.get("role") or ""), str(recipient.get("tenant") or "")),
            email=data.get("email") or None,
            referral_id=data.get("referral_id"),
            data=dict(data.get("data") or {}),
        )
