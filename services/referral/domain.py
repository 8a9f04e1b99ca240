"""The Referral aggregate: a borough's placement request, the offers it draws, and the award.

Pure domain code: no I/O, no clock, no id generation. The application service passes in the
current time, fresh ids and what the service has learned from other streams (invitations and
suspensions from `placematch.matching` / `placematch.enrolment`, the current shortlist), so every
decision here can be replayed and explained from its inputs.

Lifecycle::

    raised -> (amended)* -> awarded | withdrawn | closed

Offers live inside the referral (submitted -> withdrawn); invited providers may instead decline
with a reason code, which is kept as market intelligence.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar, Final, Iterable, Literal, Mapping

from shared.aggregate import Aggregate, NewEvent
from shared.errors import Forbidden, InvalidTransition, NotFound, RuleViolation
from shared.inputs import YEARS_AHEAD, clean_text, is_blank, years_ahead

# --- vocabulary -------------------------------------------------------------------------------

NEED_CODES: Final = frozenset(
    {"SPLD", "MLD", "SLD", "PMLD", "SEMH", "SLCN", "HI", "VI", "MSI", "PD", "ASD", "OTH"}
)
PLACEMENT_TYPES: Final = frozenset(
    {"day", "residential_38", "residential_52", "childrens_home", "foster_care"}
)
PERSONAL_FIELDS: Final = ("child_ref", "birth_date")
"""What identifies the child: sealed per referral in the store, erasable on request."""
GENDERS: Final = frozenset({"female", "male", "non_binary"})
NEEDS_INDICATORS: Final = (
    "physical_health",
    "emotional_health",
    "relationships",
    "risk_taking",
    "learning_disability",
    "educational_progress",
    "self_regulation",
    "community_engagement",
    "self_care",
    "goals_and_aspirations",
    "voice",
    "identity",
)
DECLINE_REASONS: Final = frozenset({"no_capacity", "cannot_meet_needs", "outside_area", "other"})

MAX_AGE_AT_START: Final = 25  # EHCPs run to 25
MAX_TRAVEL_KM: Final = 500
MAX_WEEKLY_FEE_PENCE: Final = 10_000_000  # £100k a week: anything above is a typing error
MAX_OUTCOMES: Final = 20
MAX_TEXT: Final = 2000
MAX_JUSTIFICATION: Final = 4000
INVITATION_RETRY_AFTER_SECONDS: Final = 1

ReferralStatus = Literal["new", "open", "awarded", "withdrawn", "closed"]
OfferStatus = Literal["submitted", "withdrawn", "awarded", "not_selected"]
CloseReason = Literal["unfilled", "by_borough"]

# Pseudonymous case reference: letters, digits and a few separators, no spaces (so no names).
_CHILD_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-_/.]{0,63}$")
_NHS_NUMBER = re.compile(r"^\d{3}[ -]?\d{3}[ -]?\d{4}$")
_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ?([0-9][A-Z]{2})$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

TWO_PLACES: Final = Decimal("0.01")


def to_score(value: Decimal | int | str) -> Decimal:
    """Scores are Decimals rounded ROUND_HALF_UP to 2 places (never floats)."""
    return Decimal(value).quantize(TWO_PLACES, rounding=ROUND_HALF_UP)


def format_score(value: Decimal | int | str) -> str:
    """Serialise a score as a string with exactly 2 places, e.g. ``"80.00"``."""
    return str(to_score(value))


def format_instant(moment: datetime) -> str:
    """ISO 8601 UTC with a `Z`, to the second."""
    return moment.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def age_in_years(birth_date: date, on: date) -> int:
    """Whole years completed on `on` (a birthday counts on the day itself)."""
    years = on.year - birth_date.year
    if (on.month, on.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


def district_of(postcode: str) -> str:
    """The outward code (``"CR0 1NX"`` -> ``"CR0"``): the location a provider may see."""
    match = _POSTCODE.match(normalise_postcode(postcode))
    if match is None:
        raise RuleViolation(f"'{postcode}' is not a UK postcode", field="location.postcode", rule="format")
    return match.group(1)


def normalise_postcode(postcode: str) -> str:
    compact = re.sub(r"\s+", "", postcode.upper())
    return f"{compact[:-3]} {compact[-3:]}" if len(compact) > 3 else compact


# --- raw input parsing (the API hands us JSON values) -----------------------------------------


def _violation(field_: str, rule: str, detail: str) -> RuleViolation:
    return RuleViolation(detail, field=field_, rule=rule)


def _require(raw: Mapping[str, Any], name: str) -> Any:
    if name not in raw or raw[name] is None:
        raise _violation(name, "required", f"'{name}' is required")
    return raw[name]


def _text(value: Any, name: str, *, max_length: int = MAX_TEXT, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _violation(name, "type", f"'{name}' must be a string")
    if not allow_empty and is_blank(value):
        raise _violation(name, "not_empty", f"'{name}' must not be empty (or only invisible characters)")
    if len(value) > max_length:
        raise _violation(name, "max_length", f"'{name}' must be at most {max_length} characters")
    return value


def _date(value: Any, name: str) -> date:
    if isinstance(value, datetime):
        raise _violation(name, "format", f"'{name}' must be a date (YYYY-MM-DD), not an instant")
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise _violation(name, "type", f"'{name}' must be a date string YYYY-MM-DD")
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise _violation(name, "format", f"'{name}' must be a date YYYY-MM-DD, got '{value}'") from None


def _instant(value: Any, name: str) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _violation(name, "format", f"'{name}' must be an ISO 8601 instant, got '{value}'") from None
    else:
        raise _violation(name, "type", f"'{name}' must be an ISO 8601 instant string")
    if moment.tzinfo is None:
        raise _violation(name, "timezone", f"'{name}' must carry a time zone, e.g. 2026-07-01T17:00:00Z")
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is in the year 10000 in UTC
        raise _violation(name, "range", f"'{name}' is outside the years 1 to 9999 in UTC") from None


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _violation(name, "type", f"'{name}' must be a whole number")
    return value


def _number(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise _violation(name, "type", f"'{name}' must be a number")
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        raise _violation(name, "type", f"'{name}' must be a number") from None
    if not number.is_finite():
        raise _violation(name, "type", f"'{name}' must be a finite number")
    return number


def _uuid(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _UUID.match(value):
        raise _violation(name, "format", f"'{name}' must be a UUID")
    return value.lower()


# --- value objects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    postcode: str
    lat: float | None = None
    lon: float | None = None

    @property
    def district(self) -> str:
        return district_of(self.postcode)

    def to_data(self) -> dict[str, Any]:
        return {"postcode": self.postcode, "lat": self.lat, "lon": self.lon, "district": self.district}

    @classmethod
    def parse(cls, raw: Any, name: str = "location") -> Location | None:
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise _violation(name, "type", f"'{name}' must be an object with postcode, lat, lon")
        unknown = set(raw) - {"postcode", "lat", "lon", "district"}
        if unknown:
            key = sorted(unknown)[0]
            raise _violation(f"{name}.{key}", "unknown_field", f"'{name}.{key}' is not a location field")
        postcode = _text(_require_in(raw, "postcode", name), f"{name}.postcode", max_length=10)
        postcode = normalise_postcode(postcode)
        district_of(postcode)
        lat_raw, lon_raw = raw.get("lat"), raw.get("lon")
        if (lat_raw is None) != (lon_raw is None):
            missing = "lat" if lat_raw is None else "lon"
            raise _violation(f"{name}.{missing}", "required", "give both 'lat' and 'lon', or neither")
        lat = lon = None
        if lat_raw is not None:
            lat_d = _number(lat_raw, f"{name}.lat")
            lon_d = _number(lon_raw, f"{name}.lon")
            if not Decimal(-90) <= lat_d <= Decimal(90):
                raise _violation(f"{name}.lat", "range", "'lat' must be between -90 and 90")
            if not Decimal(-180) <= lon_d <= Decimal(180):
                raise _violation(f"{name}.lon", "range", "'lon' must be between -180 and 180")
            lat, lon = float(lat_d), float(lon_d)
        return cls(postcode=postcode, lat=lat, lon=lon)


def _require_in(raw: Mapping[str, Any], key: str, parent: str) -> Any:
    if raw.get(key) is None:
        raise _violation(f"{parent}.{key}", "required", f"'{parent}.{key}' is required")
    return raw[key]


@dataclass(frozen=True)
class ReferralDetails:
    """What the borough says about the child and the placement it needs (DESIGN.md payload)."""

    child_ref: str | None
    """None once erased on request (personal-data-erased)."""
    birth_date: date | None
    gender: str
    primary_need: str
    secondary_needs: tuple[str, ...]
    placement_type: str
    required_from: date
    location: Location | None
    max_travel_km: int | None
    needs_profile: Mapping[str, int]
    outcomes: tuple[str, ...]
    offer_deadline: datetime
    preferred_provider_id: str | None = None

    FIELDS: ClassVar[tuple[str, ...]] = (
        "child_ref",
        "birth_date",
        "gender",
        "primary_need",
        "secondary_needs",
        "placement_type",
        "required_from",
        "location",
        "max_travel_km",
        "needs_profile",
        "outcomes",
        "offer_deadline",
        "preferred_provider_id",
    )
    erased_age_at_start: int | None = field(default=None, compare=False)
    """After erasure the birth date is gone; the age it gave at the start date is kept."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"location", "max_travel_km", "preferred_provider_id", "secondary_needs"})

    @property
    def age_at_start(self) -> int:
        if self.birth_date is None:
            return self.erased_age_at_start or 0
        return age_in_years(self.birth_date, self.required_from)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> ReferralDetails:
        """Build from JSON values, checking types and formats; `validate` checks the rules."""
        if not isinstance(raw, Mapping):
            raise _violation("body", "type", "the referral must be a JSON object")
        unknown = set(raw) - set(cls.FIELDS)
        if unknown:
            key = sorted(unknown)[0]
            raise _violation(key, "unknown_field", f"'{key}' is not a referral field")
        return cls(**{name: _parse_field(name, raw) for name in cls.FIELDS})

    def with_changes(self, raw: Mapping[str, Any]) -> ReferralDetails:
        """A copy with the given raw fields parsed and replaced (for amendments)."""
        if not isinstance(raw, Mapping):
            raise _violation("body", "type", "the amendment must be a JSON object")
        unknown = set(raw) - set(self.FIELDS)
        if unknown:
            key = sorted(unknown)[0]
            raise _violation(key, "unknown_field", f"'{key}' is not an amendable referral field")
        return replace(self, **{name: _parse_field(name, raw) for name in raw})

    def validate(self, now: datetime) -> None:
        """Business rules on the content; raises RuleViolation naming the field."""
        today = now.astimezone(timezone.utc).date()
        if self.child_ref is not None and _NHS_NUMBER.match(self.child_ref):  # None once erased
            raise _violation(
                "child_ref", "pseudonymous", "'child_ref' looks like an NHS number: send a pseudonymous case reference"
            )
        if self.birth_date is not None and self.birth_date > today:
            raise _violation("birth_date", "not_in_future", "'birth_date' is in the future")
        if self.gender not in GENDERS:
            raise _violation("gender", "one_of", f"'gender' must be one of {sorted(GENDERS)}")
        if self.primary_need not in NEED_CODES:
            raise _violation("primary_need", "need_code", f"'primary_need' must be one of {sorted(NEED_CODES)}")
        for index, code in enumerate(self.secondary_needs):
            if code not in NEED_CODES:
                raise _violation(f"secondary_needs.{index}", "need_code", f"'{code}' is not a need code")
        if len(set(self.secondary_needs)) != len(self.secondary_needs):
            raise _violation("secondary_needs", "unique", "'secondary_needs' lists a code twice")
        if self.primary_need in self.secondary_needs:
            raise _violation("secondary_needs", "not_primary", "'secondary_needs' must not repeat the primary need")
        if self.placement_type not in PLACEMENT_TYPES:
            raise _violation(
                "placement_type", "one_of", f"'placement_type' must be one of {sorted(PLACEMENT_TYPES)}"
            )
        if self.required_from < today:
            raise _violation("required_from", "not_in_past", "'required_from' is in the past")
        if self.required_from > years_ahead(today):
            raise _violation("required_from", "range", f"'required_from' is more than {YEARS_AHEAD} years ahead")
        if self.birth_date is not None and self.required_from < self.birth_date:
            raise _violation("required_from", "after_birth", "'required_from' is before 'birth_date'")
        if self.age_at_start > MAX_AGE_AT_START:
            raise _violation(
                "birth_date", "age_range", f"the child would be over {MAX_AGE_AT_START} at 'required_from'"
            )
        if self.max_travel_km is not None and not 1 <= self.max_travel_km <= MAX_TRAVEL_KM:
            raise _violation("max_travel_km", "range", f"'max_travel_km' must be between 1 and {MAX_TRAVEL_KM}")
        if self.offer_deadline <= now:
            raise _violation("offer_deadline", "in_future", "'offer_deadline' has already passed")
        if self.offer_deadline.date() > self.required_from:
            raise _violation(
                "offer_deadline", "before_required_from", "'offer_deadline' must fall on or before 'required_from'"
            )

    def to_data(self, borough: str) -> dict[str, Any]:
        """The `referral` object of EVENTS.md."""
        return {
            "borough": borough,
            "child_ref": self.child_ref,
            "birth_date": self.birth_date.isoformat() if self.birth_date else None,
            "age_at_start": self.age_at_start,
            "gender": self.gender,
            "primary_need": self.primary_need,
            "secondary_needs": list(self.secondary_needs),
            "placement_type": self.placement_type,
            "required_from": self.required_from.isoformat(),
            "location": self.location.to_data() if self.location else None,
            "max_travel_km": self.max_travel_km,
            "needs_profile": dict(self.needs_profile),
            "outcomes": list(self.outcomes),
            "offer_deadline": format_instant(self.offer_deadline),
            "preferred_provider_id": self.preferred_provider_id,
        }

    def field_data(self, name: str) -> Any:
        return self.to_data("")[name]

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ReferralDetails:
        location = data.get("location")
        return cls(
            child_ref=data.get("child_ref"),
            birth_date=date.fromisoformat(data["birth_date"]) if data.get("birth_date") else None,
            erased_age_at_start=data.get("age_at_start"),
            gender=data["gender"],
            primary_need=data["primary_need"],
            secondary_needs=tuple(data.get("secondary_needs") or ()),
            placement_type=data["placement_type"],
            required_from=date.fromisoformat(data["required_from"]),
            location=(
                Location(postcode=location["postcode"], lat=location.get("lat"), lon=location.get("lon"))
                if location
                else None
            ),
            max_travel_km=data.get("max_travel_km"),
            needs_profile=dict(data["needs_profile"]),
            outcomes=tuple(data.get("outcomes") or ()),
            offer_deadline=parse_instant(data["offer_deadline"]),
            preferred_provider_id=data.get("preferred_provider_id"),
        )


def _parse_field(name: str, raw: Mapping[str, Any]) -> Any:
    optional = name in ReferralDetails.OPTIONAL
    value = raw.get(name)
    if value is None:
        if name == "secondary_needs":
            return ()
        if optional:
            return None
        raise _violation(name, "required", f"'{name}' is required")
    match name:
        case "child_ref":
            text = _text(value, name, max_length=64)
            if not _CHILD_REF.match(text):
                raise _violation(
                    name, "pseudonymous", "'child_ref' must be a pseudonymous reference (letters, digits, - _ / .)"
                )
            return text
        case "birth_date" | "required_from":
            return _date(value, name)
        case "gender" | "primary_need" | "placement_type":
            return _text(value, name, max_length=64)
        case "secondary_needs":
            if not isinstance(value, list):
                raise _violation(name, "type", "'secondary_needs' must be a list of need codes")
            return tuple(_text(item, f"{name}.{i}", max_length=8) for i, item in enumerate(value))
        case "location":
            return Location.parse(value)
        case "max_travel_km":
            return _integer(value, name)
        case "needs_profile":
            return _parse_needs_profile(value)
        case "outcomes":
            if not isinstance(value, list):
                raise _violation(name, "type", "'outcomes' must be a list of strings")
            if not value:
                raise _violation(name, "not_empty", "'outcomes' must name at least one outcome wanted")
            if len(value) > MAX_OUTCOMES:
                raise _violation(name, "max_items", f"'outcomes' may list at most {MAX_OUTCOMES} outcomes")
            return tuple(clean_text(_text(item, f"{name}.{i}", max_length=500)) for i, item in enumerate(value))
        case "offer_deadline":
            return _instant(value, name)
        case "preferred_provider_id":
            return _uuid(value, name)
    raise AssertionError(name)  # pragma: no cover


def _parse_needs_profile(value: Any) -> dict[str, int]:
    name = "needs_profile"
    if not isinstance(value, Mapping):
        raise _violation(name, "type", "'needs_profile' must be an object of the 12 indicators")
    for key in value:
        if key not in NEEDS_INDICATORS:
            raise _violation(f"{name}.{key}", "unknown_indicator", f"'{key}' is not a Valuing Care indicator")
    profile: dict[str, int] = {}
    for key in NEEDS_INDICATORS:
        if value.get(key) is None:
            raise _violation(f"{name}.{key}", "required", f"'{name}.{key}' is required (0-3)")
        score = _integer(value[key], f"{name}.{key}")
        if not 0 <= score <= 3:
            raise _violation(f"{name}.{key}", "range", f"'{name}.{key}' must be between 0 and 3")
        profile[key] = score
    return profile


@dataclass(frozen=True)
class Invitation:
    """What the service knows about one provider and this referral, from other streams.

    `known` is False until matching's first `referral-matched` for the referral has arrived:
    then an offer cannot be judged yet and must be retried, never silently accepted.
    """

    known: bool
    invited: bool
    suspended: bool = False


@dataclass(frozen=True)
class Shortlist:
    """The latest `shortlist-ranked` for the referral: ranked offer ids (best first) and exclusions."""

    ranked_offer_ids: tuple[str, ...]
    excluded_offer_ids: frozenset[str] = frozenset()

    @property
    def top_offer_id(self) -> str | None:
        return self.ranked_offer_ids[0] if self.ranked_offer_ids else None

    def is_current_for(self, active_offer_ids: Iterable[str]) -> bool:
        """True when the ranking covers exactly the offers standing now (none missing, none gone)."""
        active = set(active_offer_ids)
        ranked = set(self.ranked_offer_ids)
        return ranked <= active and active <= ranked | self.excluded_offer_ids


class InvitationPending(InvalidTransition):
    """An offer or decline came before the invitation list is known: retry shortly (409)."""

    title = "Invitation not yet known"
    retry_after: int = INVITATION_RETRY_AFTER_SECONDS


class ShortlistPending(InvalidTransition):
    """The award came before matching ranked the current offers: retry shortly (409)."""

    title = "Shortlist not yet ranked"
    retry_after: int = INVITATION_RETRY_AFTER_SECONDS


@dataclass
class Offer:
    offer_id: str
    provider_id: str
    weekly_fee_pence: int
    start_date: date
    notes: str
    submitted_at: str
    status: OfferStatus = "submitted"
    withdrawal_reason: str | None = None

    def to_view(self) -> dict[str, Any]:
        return {
            "id": self.offer_id,
            "provider_id": self.provider_id,
            "weekly_fee_pence": self.weekly_fee_pence,
            "start_date": self.start_date.isoformat(),
            "notes": self.notes,
            "submitted_at": self.submitted_at,
            "status": self.status,
        }


@dataclass(frozen=True)
class Decline:
    provider_id: str
    reason: str
    note: str | None


# --- the aggregate ----------------------------------------------------------------------------


class Referral(Aggregate):
    """A borough's placement request. Owned by one borough; offers and declines live inside it."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status: ReferralStatus = "new"
        self.borough: str = ""
        self.details: ReferralDetails | None = None
        self.raised_at: str | None = None
        self.offers: dict[str, Offer] = {}
        self.declines: dict[str, Decline] = {}
        self.awarded_offer_id: str | None = None
        self.justification: str | None = None
        self.close_reason: CloseReason | None = None
        self.withdrawal_reason: str | None = None

    # queries

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def active_offers(self) -> list[Offer]:
        return [offer for offer in self.offers.values() if offer.status == "submitted"]

    def active_offer_of(self, provider_id: str) -> Offer | None:
        return next((o for o in self.active_offers() if o.provider_id == provider_id), None)

    def is_due_for_closing(self, now: datetime) -> bool:
        """Open, past its offer deadline and without a standing offer: close it unfilled."""
        return (
            self.is_open
            and self.details is not None
            and now >= self.details.offer_deadline
            and not self.active_offers()
        )

    def to_data(self) -> dict[str, Any]:
        assert self.details is not None
        return self.details.to_data(self.borough)

    # commands

    def raise_referral(self, borough: str, raw: Mapping[str, Any], now: datetime) -> list[NewEvent]:
        """Raise this (new, empty) referral for `borough`."""
        if not borough:
            raise Forbidden("a referral is raised by a borough")
        if self.status != "new":
            raise InvalidTransition(f"referral {self.id} already exists", rule="already_raised")
        details = ReferralDetails.parse(raw)
        details.validate(now)
        return [NewEvent("referral-raised", {**details.to_data(borough), "raised_at": format_instant(now)})]

    def amend(self, borough: str, raw: Mapping[str, Any], now: datetime) -> list[NewEvent]:
        self._require_owner(borough)
        self._require_open("amend")
        assert self.details is not None
        if not isinstance(raw, Mapping) or not raw:
            raise _violation("body", "not_empty", "an amendment must change at least one field")
        amended = self.details.with_changes(raw)
        changed = {
            name: amended.field_data(name)
            for name in ReferralDetails.FIELDS
            if amended.field_data(name) != self.details.field_data(name)
        }
        if not changed:
            raise _violation("body", "no_changes", "the amendment changes nothing")
        amended.validate(now)
        if "birth_date" in changed or "required_from" in changed:
            changed["age_at_start"] = amended.age_at_start
        return [NewEvent("referral-amended", {"changes": changed, "referral": amended.to_data(self.borough)})]

    def withdraw(self, borough: str, reason: str | None) -> list[NewEvent]:
        self._require_owner(borough)
        self._require_open("withdraw")
        if reason is not None:
            reason = clean_text(_text(reason, "reason", allow_empty=True)) or None
        return [NewEvent("referral-withdrawn", {"reason": reason})]

    def submit_offer(
        self,
        *,
        offer_id: str,
        provider_id: str,
        invitation: Invitation,
        weekly_fee_pence: Any,
        start_date: Any,
        notes: Any,
        now: datetime,
    ) -> list[NewEvent]:
        self._require_visible_to_provider(provider_id, invitation)
        self._require_open("take offers on")
        assert self.details is not None
        if now >= self.details.offer_deadline:
            raise InvalidTransition("the offer deadline has passed", field="offer_deadline", rule="deadline_passed")
        if self.active_offer_of(provider_id) is not None:
            raise InvalidTransition(
                "you already have an offer on this referral: withdraw it before offering again",
                rule="one_offer_per_provider",
            )
        fee = _integer(_require({"weekly_fee_pence": weekly_fee_pence}, "weekly_fee_pence"), "weekly_fee_pence")
        if not 1 <= fee <= MAX_WEEKLY_FEE_PENCE:
            raise _violation(
                "weekly_fee_pence", "range", f"'weekly_fee_pence' must be between 1 and {MAX_WEEKLY_FEE_PENCE}"
            )
        start = _date(_require({"start_date": start_date}, "start_date"), "start_date")
        if start < now.astimezone(timezone.utc).date():
            raise _violation("start_date", "not_in_past", "'start_date' is in the past")
        if start > years_ahead(now.astimezone(timezone.utc).date()):
            raise _violation("start_date", "range", f"'start_date' is more than {YEARS_AHEAD} years ahead")
        text = "" if notes is None else _text(notes, "notes", allow_empty=True)
        return [
            NewEvent(
                "offer-submitted",
                {
                    "offer_id": offer_id,
                    "provider_id": provider_id,
                    "weekly_fee_pence": fee,
                    "start_date": start.isoformat(),
                    "notes": text,
                    "submitted_at": format_instant(now),
                },
            )
        ]

    def withdraw_offer(self, provider_id: str, offer_id: str, reason: str | None) -> list[NewEvent]:
        offer = self.offers.get(offer_id)
        if offer is None or offer.provider_id != provider_id:
            raise NotFound("no such offer of yours on this referral")
        self._require_open("withdraw offers on")
        if offer.status != "submitted":
            raise InvalidTransition(f"the offer is {offer.status}, not submitted", rule="offer_not_submitted")
        if reason is not None:
            reason = clean_text(_text(reason, "reason", allow_empty=True)) or None
        return [NewEvent("offer-withdrawn", {"offer_id": offer_id, "provider_id": provider_id, "reason": reason})]

    def decline(
        self, provider_id: str, invitation: Invitation, reason: Any, note: Any = None
    ) -> list[NewEvent]:
        """An invited provider says no, with a reason code: market intelligence on unmet demand."""
        # A suspended provider may still tell the borough it cannot take the child.
        self._require_visible_to_provider(provider_id, replace(invitation, suspended=False))
        self._require_open("decline")
        reason_code = _text(_require({"reason": reason}, "reason"), "reason", max_length=64)
        if reason_code not in DECLINE_REASONS:
            raise _violation("reason", "one_of", f"'reason' must be one of {sorted(DECLINE_REASONS)}")
        if provider_id in self.declines:
            raise InvalidTransition("you have already declined this referral", rule="already_declined")
        if self.active_offer_of(provider_id) is not None:
            raise InvalidTransition("withdraw your offer before declining", rule="offer_standing")
        note_text = None if note is None else (clean_text(_text(note, "note", allow_empty=True)) or None)
        if reason_code == "other" and not note_text:
            raise _violation("note", "required", "say why in 'note' when the reason is 'other'")
        return [NewEvent("invitation-declined", {"provider_id": provider_id, "reason": reason_code, "note": note_text})]

    def award(
        self,
        *,
        borough: str,
        offer_id: Any,
        justification: Any,
        shortlist: Shortlist | None,
        suspended_providers: frozenset[str],
        now: datetime,
    ) -> list[NewEvent]:
        """Award the named offer. Anything other than the top of the current shortlist must be justified.

        The shortlist must be current (it ranks exactly the offers standing now), otherwise the
        "top" would be a guess: the award is refused with a retry hint until matching catches up.
        """
        self._require_owner(borough)
        self._require_open("award")
        chosen_id = _text(_require({"offer_id": offer_id}, "offer_id"), "offer_id", max_length=64)
        offer = self.offers.get(chosen_id)
        if offer is None:
            raise _violation("offer_id", "unknown_offer", "'offer_id' is not an offer on this referral")
        if offer.status != "submitted":
            raise _violation("offer_id", "offer_not_submitted", f"the offer is {offer.status}, not submitted")
        if offer.provider_id in suspended_providers:
            raise _violation("offer_id", "provider_suspended", "the offering provider is suspended")
        reason = None if justification is None else clean_text(_text(
            justification, "justification", max_length=MAX_JUSTIFICATION, allow_empty=True
        )) or None
        active = self.active_offers()
        if shortlist is None or not shortlist.is_current_for(o.offer_id for o in active):
            raise ShortlistPending(
                "the shortlist does not yet rank the current offers; retry shortly", rule="shortlist_pending"
            )
        top = shortlist.top_offer_id
        if chosen_id != top and reason is None:
            raise _violation(
                "justification",
                "required_when_not_top",
                "a 'justification' is required when awarding other than the top-ranked offer",
            )
        return [
            NewEvent(
                "placement-awarded",
                {
                    "offer_id": offer.offer_id,
                    "provider_id": offer.provider_id,
                    "weekly_fee_pence": offer.weekly_fee_pence,
                    "justification": reason,
                    "top_ranked_offer_id": top,
                    "not_selected": [
                        {"offer_id": o.offer_id, "provider_id": o.provider_id}
                        for o in active
                        if o.offer_id != offer.offer_id
                    ],
                    "borough": self.borough,
                    "awarded_at": format_instant(now),
                },
            )
        ]

    def close(self, borough: str) -> list[NewEvent]:
        """The borough stops the process without placing: the demand stays on record as unfilled."""
        self._require_owner(borough)
        self._require_open("close")
        return [NewEvent("referral-closed", {"reason": "by_borough", "unfilled": True, "borough": self.borough})]

    def erase_personal_data(self, borough: str, erased_at: datetime) -> list[NewEvent]:
        """Forget who the child is (child_ref, birth date) on request; the rest stays as evidence."""
        self._require_owner(borough)
        if self.details is None:
            raise NotFound("no such referral")
        if self.details.child_ref is None and self.details.birth_date is None:
            return []
        return [NewEvent("personal-data-erased", {"fields": list(PERSONAL_FIELDS), "borough": self.borough,
                                                   "erased_at": format_instant(erased_at)})]

    def close_unfilled(self, now: datetime) -> list[NewEvent]:
        """The deadline closer: only at or after `offer_deadline`, and only with no standing offer."""
        self._require_open("close")
        assert self.details is not None
        if now < self.details.offer_deadline:
            raise InvalidTransition("the offer deadline has not passed yet", rule="deadline_not_passed")
        if self.active_offers():
            raise InvalidTransition("the referral has offers to award", rule="has_offers")
        return [NewEvent("referral-closed", {"reason": "unfilled", "unfilled": True, "borough": self.borough})]

    # guards

    def _require_owner(self, borough: str) -> None:
        """Another borough's referral does not exist for it: 404, never 403 (no id probing)."""
        if self.status == "new" or borough != self.borough:
            raise NotFound(f"referral {self.id} not found")

    def _require_open(self, action: str) -> None:
        if self.status != "open":
            raise InvalidTransition(f"cannot {action} a referral that is {self.status}", rule="referral_not_open")

    def _require_visible_to_provider(self, provider_id: str, invitation: Invitation) -> None:
        if self.status == "new":
            raise NotFound(f"referral {self.id} not found")
        if invitation.suspended:
            raise Forbidden("your enrolment is suspended: you cannot offer", rule="provider_suspended")
        if invitation.known and not invitation.invited:
            raise Forbidden("you were not invited to this referral", rule="not_invited")
        if not invitation.known:
            raise InvitationPending(
                "the invitation list for this referral is not known yet; retry shortly", rule="invitation_pending"
            )

    # folding

    def apply(self, type: str, data: dict[str, Any]) -> None:
        match type:
            case "referral-raised":
                self.status = "open"
                self.borough = data["borough"]
                self.details = ReferralDetails.from_data(data)
                self.raised_at = data.get("raised_at")
            case "referral-amended":
                self.details = ReferralDetails.from_data(data["referral"])
            case "referral-withdrawn":
                self.status = "withdrawn"
                self.withdrawal_reason = data.get("reason")
            case "offer-submitted":
                self.offers[data["offer_id"]] = Offer(
                    offer_id=data["offer_id"],
                    provider_id=data["provider_id"],
                    weekly_fee_pence=data["weekly_fee_pence"],
                    start_date=date.fromisoformat(data["start_date"]),
                    notes=data.get("notes") or "",
                    submitted_at=data["submitted_at"],
                )
            case "offer-withdrawn":
                offer = self.offers[data["offer_id"]]
                offer.status = "withdrawn"
                offer.withdrawal_reason = data.get("reason")
            case "invitation-declined":
                self.declines[data["provider_id"]] = Decline(data["provider_id"], data["reason"], data.get("note"))
            case "placement-awarded":
                self.status = "awarded"
                self.awarded_offer_id = data["offer_id"]
                self.justification = data.get("justification")
                for offer in self.offers.values():
                    if offer.offer_id == data["offer_id"]:
                        offer.status = "awarded"
                    elif offer.status == "submitted":
                        offer.status = "not_selected"
            case "referral-closed":
                self.status = "closed"
                self.close_reason = data["reason"]
            case "personal-data-erased":
                if self.details is not None:
                    self.details = replace(self.details, child_ref=None, birth_date=None,
                                           erased_age_at_start=self.details.age_at_start)
            case _:
                pass  # unknown (future) event types are ignored so old code can replay new streams
