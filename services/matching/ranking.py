"""Ranking of offers into a shortlist, under a versioned policy (DESIGN.md, "The flow" step 5).

Arithmetic is Decimal throughout and every figure is rounded ROUND_HALF_UP to 2 places:

    quality = provider quality score                       (0–100, 2 places; unscored = 0.00)
    price   = round(100 * lowest_fee / this_fee)           (lowest among the ranked offers)
    score   = round(quality_weight * quality + price_weight * price)

`score` is computed from the *rounded* components, so a reader can check any entry by hand from
the figures it shows. Ties on score go to the earlier offer (`submitted_at`, then the order in
which matching saw the offers, then offer id), so nothing depends on wall-clock time or dict order.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.aggregate import Aggregate, NewEvent
from shared.errors import RuleViolation
from shared.vocabulary import two_places

from .eligibility import ProviderFacts

HUNDRED = Decimal(100)
POLICY_STREAM = "policy"
WEIGHT_BOUNDS = (Decimal(0), Decimal(1))
QUALITY_BOUNDS = (Decimal(0), HUNDRED)


@dataclass(frozen=True)
class Policy:
    """One version of the ranking policy. Version 1 is the default of DESIGN.md."""

    version: int = 1
    quality_weight: Decimal = Decimal("0.60")
    price_weight: Decimal = Decimal("0.40")
    min_quality: Decimal | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "quality_weight": str(self.quality_weight),
            "price_weight": str(self.price_weight),
            "min_quality": None if self.min_quality is None else str(self.min_quality),
        }


DEFAULT_POLICY = Policy()


def two_place_decimal(value: Any, field: str, low: Decimal, high: Decimal) -> Decimal:
    """A weight or score given as string, number or Decimal: finite, in range, at most 2 decimal
    places (checked in that order, so a client is told the same rule however it sends the value)."""
    if isinstance(value, bool) or value is None:
        raise RuleViolation(f"{field} must be a number", field=field, rule="type")
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise RuleViolation(f"{field} must be a number, got {value!r}", field=field, rule="type") from None
    if not number.is_finite():
        raise RuleViolation(f"{field} must be a finite number", field=field, rule="type")
    if not low <= number <= high:  # before rounding: quantize overflows on huge values
        raise RuleViolation(f"{field} must be between {low} and {high}, got {value}", field=field, rule="range")
    if number != two_places(number):
        raise RuleViolation(f"{field} allows at most 2 decimal places, got {value}", field=field,
                            rule="two_decimal_places")
    return two_places(number)


class RankingPolicy(Aggregate):
    """The versioned ranking policy; each change is a `policy-changed` event on stream `policy`."""

    def __init__(self, id: str = POLICY_STREAM) -> None:
        super().__init__(id)
        self.current: Policy = DEFAULT_POLICY

    @property
    def etag(self) -> int:
        """The policy's ETag over HTTP (shared.preconditions): its version, as `GET /policy` names it."""
        return self.current.version

    def change(self, quality_weight: Decimal | str, price_weight: Decimal | str,
               min_quality: Decimal | str | None = None) -> list[NewEvent]:
        """The next version. The API hands typed Decimals already parsed by `two_place_decimal`; the
        bounds are checked again here because they are the policy's invariants, whoever calls."""
        qw = two_place_decimal(quality_weight, "quality_weight", *WEIGHT_BOUNDS)
        pw = two_place_decimal(price_weight, "price_weight", *WEIGHT_BOUNDS)
        if qw + pw != Decimal(1):
            raise RuleViolation(
                f"quality_weight + price_weight must equal 1.00, got {qw + pw}",
                field="price_weight",
                rule="weights_sum_to_one",
            )
        gate = None if min_quality is None else two_place_decimal(min_quality, "min_quality", *QUALITY_BOUNDS)
        new = Policy(version=self.current.version + 1, quality_weight=qw, price_weight=pw, min_quality=gate)
        return [NewEvent("policy-changed", new.as_dict())]

    def apply(self, type: str, data: dict[str, Any]) -> None:
        if type == "policy-changed":
            gate = data.get("min_quality")
            self.current = Policy(
                version=int(data["version"]),
                quality_weight=Decimal(data["quality_weight"]),
                price_weight=Decimal(data["price_weight"]),
                min_quality=None if gate is None else Decimal(gate),
            )


@dataclass(frozen=True)
class Offer:
    """An offer as matching saw it. `arrival` is the order matching received offers in."""

    offer_id: str
    provider_id: str
    weekly_fee_pence: int
    submitted_at: str
    arrival: int = 0
    withdrawn: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id,
            "provider_id": self.provider_id,
            "weekly_fee_pence": self.weekly_fee_pence,
            "submitted_at": self.submitted_at,
            "arrival": self.arrival,
            "withdrawn": self.withdrawn,
        }


@dataclass(frozen=True)
class Entry:
    rank: int
    offer: Offer
    quality: Decimal
    price: Decimal
    score: Decimal

    def as_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "offer_id": self.offer.offer_id,
            "provider_id": self.offer.provider_id,
            "weekly_fee_pence": self.offer.weekly_fee_pence,
            "quality": str(self.quality),
            "price": str(self.price),
            "score": str(self.score),
        }


@dataclass(frozen=True)
class Shortlist:
    policy_version: int
    entries: tuple[Entry, ...]
    excluded: tuple[tuple[Offer, str], ...]

    def as_data(self, referral_id: str, borough: str) -> dict[str, Any]:
        """The `data` of `shortlist-ranked` (shared/EVENTS.md)."""
        return {
            "referral_id": referral_id,
            "borough": borough,
            "policy_version": self.policy_version,
            "entries": [e.as_dict() for e in self.entries],
            "excluded": [
                {"offer_id": o.offer_id, "provider_id": o.provider_id, "reason": reason}
                for o, reason in self.excluded
            ],
        }


def _arrival_key(offer: Offer) -> tuple[str, int, str]:
    return (offer.submitted_at, offer.arrival, offer.offer_id)


def exclusion_reason(offer: Offer, provider: ProviderFacts | None, policy: Policy) -> str | None:
    """Why an offer cannot be ranked, or None. Reasons are stable strings used in events."""
    if offer.withdrawn:
        return "offer_withdrawn"
    if provider is None:
        return "provider_unknown"
    if provider.status == "suspended":
        return "provider_suspended"
    if provider.status != "approved":
        return "provider_not_approved"
    if offer.weekly_fee_pence <= 0:
        return "invalid_fee"
    quality = provider.quality_score if provider.quality_score is not None else Decimal(0)
    if policy.min_quality is not None and quality < policy.min_quality:
        return "below_quality_gate"
    return None


def rank(offers: Iterable[Offer], providers: Mapping[str, ProviderFacts], policy: Policy = DEFAULT_POLICY) -> Shortlist:
    """Rank the offers of one referral. Pure and deterministic for the same inputs."""
    ordered = sorted(offers, key=_arrival_key)
    ranked: list[Offer] = []
    excluded: list[tuple[Offer, str]] = []
    for offer in ordered:
        reason = exclusion_reason(offer, providers.get(offer.provider_id), policy)
        if reason is None:
            ranked.append(offer)
        else:
            excluded.append((offer, reason))
    if not ranked:
        return Shortlist(policy.version, (), tuple(excluded))
    lowest = Decimal(min(o.weekly_fee_pence for o in ranked))
    scored: list[tuple[Decimal, Decimal, Decimal, Offer]] = []
    for offer in ranked:
        provider = providers[offer.provider_id]
        quality = provider.quality_score if provider.quality_score is not None else Decimal(0)
        quality = two_places(quality)
        price = two_places(HUNDRED * lowest / Decimal(offer.weekly_fee_pence))
        score = two_places(policy.quality_weight * quality + policy.price_weight * price)
        scored.append((score, quality, price, offer))
    scored.sort(key=lambda s: (-s[0], *_arrival_key(s[3])))
    entries = tuple(
        Entry(rank=i, offer=offer, quality=quality, price=price, score=score)
        for i, (score, quality, price, offer) in enumerate(scored, start=1)
    )
    return Shortlist(policy.version, entries, tuple(excluded))
