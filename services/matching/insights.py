"""Market insights by need code and month (pure).

Every figure is attributed to the month the referral was raised (a cohort view), so a referral
raised in March and awarded in May counts its award in March: figures for a month only change
while its referrals are still open, and a month's numbers always describe the same referrals.

Only standing offers count: a withdrawn offer counts nowhere, and a provider has at most one offer
on a referral (its latest standing one), so nobody can pad a cell with offers it then withdraws.

Two views. `insights` has the full figures (commissioners, auditors, a borough on its own
referrals). `market_insights` is what providers see, built so that a provider who knows its own
fees cannot work out a rival's (see `market_insights`).

Rounding: medians of an even count are the mean of the middle pair, ROUND_HALF_UP — to whole
pence for fees, to 2 places (as a string) for days.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from shared.vocabulary import two_places, whole

DEFAULT_MIN_PROVIDERS = 5
"""Fewest distinct providers whose offers a provider-visible fee figure may rest on."""

COHORT_GRACE = timedelta(days=7)
"""After a month ends, how long a referral raised in it may still be on its way to matching (a
cell that reopened for a late referral would publish a second median to difference with the
first). A month's referrals take weeks to settle anyway, so this rarely delays anything."""

TOO_FEW_PROVIDERS = "too_few_providers"
COHORT_OPEN = "cohort_open"


@dataclass
class ReferralRecord:
    """What insights need of one referral (no child detail).

    `offers` maps each provider with a standing offer on the referral to that offer's weekly fee."""

    referral_id: str
    borough: str
    primary_need: str
    raised_at: str
    invited: int = 0
    offers: dict[str, int] = field(default_factory=dict)
    declines: dict[str, int] = field(default_factory=dict)
    awarded_fee: int | None = None
    awarded_at: str | None = None
    closed_unfilled: bool = False
    status: str = "open"

    @property
    def month(self) -> str:
        return self.raised_at[:7]

    @property
    def offer_fees(self) -> list[int]:
        return list(self.offers.values())

    @property
    def settled(self) -> bool:
        """Awarded, withdrawn or closed: its offers can no longer change."""
        return self.status != "open"


def median(values: Sequence[int | Decimal]) -> Decimal | None:
    if not values:
        return None
    ordered = sorted(Decimal(v) for v in values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def to_pence(value: Decimal | None) -> int | None:
    return None if value is None else whole(value)


def median_pence(values: Sequence[int]) -> int | None:
    return to_pence(median(values))


def days_between(start: str, end: str) -> int:
    return (date.fromisoformat(end[:10]) - date.fromisoformat(start[:10])).days


def offering_providers(records: Iterable[ReferralRecord]) -> set[str]:
    return {provider for r in records for provider in r.offers}


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
        "providers": len(offering_providers(records)),
        "declines": dict(sorted(declines.items())),
        "awards": len(awarded),
        "closed_unfilled": sum(1 for r in records if r.closed_unfilled),
        "median_weekly_fee_pence": median_pence(fees),
        "median_days_to_award": None if median_days is None else str(two_places(median_days)),
        "cost_avoidance_pence_per_week": avoidance,
    }


def _cells(records: Iterable[ReferralRecord]) -> list[tuple[tuple[str, str], list[ReferralRecord]]]:
    buckets: dict[tuple[str, str], list[ReferralRecord]] = {}
    for r in records:
        buckets.setdefault((r.primary_need, r.month), []).append(r)
    return sorted(buckets.items())


def insights(records: Iterable[ReferralRecord], *, by_borough: bool) -> list[dict[str, Any]]:
    """Full figures in rows by (need, month), sorted. `by_borough` adds a per-borough breakdown
    (commissioners). Not for providers: see `market_insights`."""
    rows = []
    for (need, month), group in _cells(records):
        row: dict[str, Any] = {"need": need, "month": month, **figures(group)}
        if by_borough:
            per: dict[str, list[ReferralRecord]] = {}
            for r in group:
                per.setdefault(r.borough, []).append(r)
            row["boroughs"] = {b: figures(rs) for b, rs in sorted(per.items())}
        rows.append(row)
    return rows


def provider_figures(records: Iterable[ReferralRecord]) -> dict[str, Decimal]:
    """One figure per provider: the median of its standing fees across the referrals given."""
    fees: dict[str, list[int]] = {}
    for r in records:
        for provider, fee in r.offers.items():
            fees.setdefault(provider, []).append(fee)
    return {provider: m for provider, values in fees.items() if (m := median(values)) is not None}


def cohort_final(month: str, records: Iterable[ReferralRecord], today: date) -> bool:
    """The month is over (with a grace for referrals still in flight) and each of its referrals is
    settled: from then on the cell's figures never change."""
    year, mon = int(month[:4]), int(month[5:7])
    next_month = date(year + mon // 12, mon % 12 + 1, 1)
    return today >= next_month + COHORT_GRACE and all(r.settled for r in records)


def market_insights(records: Iterable[ReferralRecord], *, min_providers: int = DEFAULT_MIN_PROVIDERS,
                    today: date) -> list[dict[str, Any]]:
    """What providers may see: rows by (need, month) pooled across boroughs, no cost avoidance.

    The one fee figure, `median_weekly_fee_pence`, is the median of one figure per provider (the
    median of its standing fees in the cell), and is published only when

    - at least `min_providers` distinct providers have a standing offer in the cell, and
    - the cell is final (`cohort_final`), so it is published once and never moves.

    Otherwise it is null and `suppressed` is true, with `suppressed_reason` saying why. Why both:
    a provider knows its own fees. Below the threshold the median of two or three providers would
    name the others' prices. And a median that moves while offers come and go could be differenced
    in time: a provider watching a cell of an odd number of providers m, then m' when the single
    rival on its referral offers x, reads x = 2m' - m whenever x lands near the middle (it sees
    that rival's offer arrive in its shortlist's `ranked_offers`); it could also withdraw and
    re-offer its own fee to read the order statistics around the median. Cells are disjoint
    (need x month; the `need`/`month` filters only select whole rows), no fee sum or borough
    breakdown is shown, and a median does not subtract, so no two figures difference either.
    What remains is inherent in any median: a value that one of at least `min_providers - 1`
    rivals offered, not whose.
    """
    rows = []
    for (need, month), group in _cells(records):
        row = figures(group)
        row.pop("cost_avoidance_pence_per_week")
        per_provider = provider_figures(group)
        reason = None
        if len(per_provider) < min_providers:
            reason = TOO_FEW_PROVIDERS
        elif not cohort_final(month, group, today):
            reason = COHORT_OPEN
        row["median_weekly_fee_pence"] = None if reason else to_pence(median(list(per_provider.values())))
        rows.append({"need": need, "month": month, **row, "suppressed": reason is not None,
                     "suppressed_reason": reason})
    return rows


# --- time to place and fee quartiles (the console's charts) -------------------------------------------

TIME_TO_PLACE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0-7", 0, 7), ("8-14", 8, 14), ("15-28", 15, 28), ("29-56", 29, 56), ("57+", 57, None))
"""Days from a referral being raised to its award, in these buckets (inclusive bounds)."""


def time_to_place(records: Iterable[ReferralRecord]) -> dict[str, Any]:
    """How many awards took how long: one count per bucket of `TIME_TO_PLACE_BUCKETS`. Counts of
    awards only (no fee, no borough), so the same figures serve every role on its own records."""
    days = [days_between(r.raised_at, r.awarded_at) for r in records if r.awarded_fee is not None and r.awarded_at]
    buckets = []
    for label, low, high in TIME_TO_PLACE_BUCKETS:
        count = sum(1 for d in days if d >= low and (high is None or d <= high))
        buckets.append({"label": label, "min_days": low, "max_days": high, "awards": count})
    middle = median(days)
    return {"awards": len(days), "median_days": None if middle is None else str(two_places(middle)),
            "buckets": buckets}


def quartiles(values: Sequence[int | Decimal]) -> tuple[int, int, int]:
    """Lower quartile, median and upper quartile in whole pence (inclusive method; at least 2 values)."""
    import statistics

    q1, q2, q3 = statistics.quantiles([Decimal(v) for v in values], n=4, method="inclusive")
    return whole(q1), whole(q2), whole(q3)


def fee_quartiles(records: Iterable[ReferralRecord], *, min_providers: int = DEFAULT_MIN_PROVIDERS,
                  pooled: bool, today: date) -> list[dict[str, Any]]:
    """Weekly fee by need: lower quartile, median, upper quartile of the standing offers.

    A cell (a need) is suppressed when fewer than `min_providers` distinct providers offered in it.
    `pooled` (providers) rests each cell on one figure per provider (the median of its fees, as
    `market_insights`) over final months only (`cohort_final`), so that no figure moves as a rival
    offers or withdraws and none rests on fewer than `min_providers` providers: no rival's fee is
    derivable. Otherwise (commissioners, auditors, a borough on its own referrals) every standing
    offer counts."""
    by_need: dict[str, list[ReferralRecord]] = {}
    if pooled:
        for (need, month), group in _cells(records):
            if cohort_final(month, group, today):
                by_need.setdefault(need, []).extend(group)
    else:
        for r in records:
            by_need.setdefault(r.primary_need, []).append(r)
    rows = []
    for need, group in sorted(by_need.items()):
        providers = offering_providers(group)
        values: list[int | Decimal] = (list(provider_figures(group).values()) if pooled
                                       else [fee for r in group for fee in r.offer_fees])
        row: dict[str, Any] = {"need": need, "providers": len(providers), "offers": sum(len(r.offers) for r in group)}
        if len(providers) < max(min_providers, 2) or len(values) < 2:
            rows.append({**row, "lower_quartile_pence": None, "median_pence": None, "upper_quartile_pence": None,
                         "suppressed": True, "suppressed_reason": TOO_FEW_PROVIDERS})
            continue
        q1, q2, q3 = quartiles(values)
        rows.append({**row, "lower_quartile_pence": q1, "median_pence": q2, "upper_quartile_pence": q3,
                     "suppressed": False, "suppressed_reason": None})
    return rows
