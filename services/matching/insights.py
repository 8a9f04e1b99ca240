"""Market insights by need code and month (pure).

Every figure is attributed to the month the referral was raised (a cohort view), so a referral
raised in March and awarded in May counts its award in March: figures for a month only change
while its referrals are still open, and a month's numbers always describe the same referrals.

Rounding: medians of an even count are the mean of the middle pair, ROUND_HALF_UP — to whole
pence for fees, to 2 places (as a string) for days.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterable, Sequence

TWO_PLACES = Decimal("0.01")


@dataclass
class ReferralRecord:
    """What insights need of one referral (no child detail)."""

    referral_id: str
    borough: str
    primary_need: str
    raised_at: str
    invited: int = 0
    offer_fees: list[int] = field(default_factory=list)
    declines: dict[str, int] = field(default_factory=dict)
    awarded_fee: int | None = None
    awarded_at: str | None = None
    closed_unfilled: bool = False

    @property
    def month(self) -> str:
        return self.raised_at[:7]


def median(values: Sequence[int]) -> Decimal | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return Decimal(ordered[mid])
    return (Decimal(ordered[mid - 1]) + Decimal(ordered[mid])) / 2


def median_pence(values: Sequence[int]) -> int | None:
    m = median(values)
    return None if m is None else int(m.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def days_between(start: str, end: str) -> int:
    return (date.fromisoformat(end[:10]) - date.fromisoformat(start[:10])).days


def figures(records: Iterable[ReferralRecord]) -> dict[str, Any]:
    records = list(records)
    fees = [fee for r in records for fee in r.offer_fees]
    declines: dict[str, int] = {}
    for r in records:
        for reason, n in r.declines.items():
            declines[reason] = declines.get(reason, 0) + n
    awarded = [r for r in records if r.awarded_fee is not None]
    days = [days_between(r.raised_at, r.awarded_at) for r in awarded if r.awarded_at]
    median_days = median(days)
    avoidance = 0
    for r in awarded:
        offered = median_pence(r.offer_fees)
        if offered is not None and r.awarded_fee is not None:
            avoidance += offered - r.awarded_fee
    return {
        "referrals_raised": len(records),
        "providers_invited": sum(r.invited for r in records),
        "offers": len(fees),
        "declines": dict(sorted(declines.items())),
        "awards": len(awarded),
        "closed_unfilled": sum(1 for r in records if r.closed_unfilled),
        "median_weekly_fee_pence": median_pence(fees),
        "median_days_to_award": None if median_days is None else str(median_days.quantize(TWO_PLACES, rounding=ROUND_HALF_UP)),
        "cost_avoidance_pence_per_week": avoidance,
    }


def insights(records: Iterable[ReferralRecord], *, by_borough: bool) -> list[dict[str, Any]]:
    """Rows by (need, month), sorted. `by_borough` adds a per-borough breakdown (commissioners);
    without it the figures are pooled across boroughs (what providers may see)."""
    buckets: dict[tuple[str, str], list[ReferralRecord]] = {}
    for r in records:
        buckets.setdefault((r.primary_need, r.month), []).append(r)
    rows = []
    for (need, month), group in sorted(buckets.items()):
        row: dict[str, Any] = {"need": need, "month": month, **figures(group)}
        if by_borough:
            per: dict[str, list[ReferralRecord]] = {}
            for r in group:
                per.setdefault(r.borough, []).append(r)
            row["boroughs"] = {b: figures(rs) for b, rs in sorted(per.items())}
        rows.append(row)
    return rows
