from __future__ import annotations

from dataclasses import replace
from datetime import date
from itertools import product
from typing import Any

from services.matching.insights import (
    ReferralRecord,
    cohort_final,
    insights,
    market_insights,
    median_pence,
)

LATER = date(2026, 12, 1)
"""A day on which the months of these records are long over."""


def records() -> list[ReferralRecord]:
    return [
        ReferralRecord("r1", "croydon", "ASD", "2026-03-02T09:00:00Z", invited=3,
                       offers={"pa": 400000, "pb": 500000, "pc": 450000},
                       declines={"no_capacity": 1}, awarded_fee=400000, awarded_at="2026-03-22T09:00:00Z",
                       status="awarded"),
        ReferralRecord("r2", "lambeth", "ASD", "2026-03-10T09:00:00Z", invited=2, offers={"pd": 300000, "pa": 310000},
                       declines={"no_capacity": 1, "outside_area": 1}, awarded_fee=310000,
                       awarded_at="2026-04-09T00:00:00Z", status="awarded"),
        ReferralRecord("r3", "croydon", "ASD", "2026-03-15T09:00:00Z", invited=0, closed_unfilled=True,
            status="closed"),
        ReferralRecord("r4", "croydon", "SEMH", "2026-04-01T09:00:00Z", invited=1, offers={"pa": 900000}),
    ]


def test_median_rounds_half_up_to_whole_pence() -> None:
    assert median_pence([]) is None
    assert median_pence([3, 1, 2]) == 2
    assert median_pence([1, 2]) == 2  # 1.5 -> 2
    assert median_pence([300000, 310001]) == 305001  # 305000.5 -> 305001


def test_insights_by_need_and_month_with_hand_computed_figures() -> None:
    rows = insights(records(), by_borough=True)
    assert [(r["need"], r["month"]) for r in rows] == [("ASD", "2026-03"), ("SEMH", "2026-04")]
    asd = rows[0]
    assert asd["referrals_raised"] == 3 and asd["providers_invited"] == 5 and asd["offers"] == 5
    assert asd["providers"] == 4  # pa offered on r1 and r2
    assert asd["declines"] == {"no_capacity": 2, "outside_area": 1}
    assert asd["awards"] == 2 and asd["closed_unfilled"] == 1
    assert asd["median_weekly_fee_pence"] == 400000  # 300000 310000 400000 450000 500000
    assert asd["median_days_to_award"] == "25.00"  # 20 and 30 days
    # r1: median 450000 - 400000 = 50000; r2: median 305000 - 310000 = -5000
    assert asd["cost_avoidance_pence_per_week"] == 45000
    assert set(asd["boroughs"]) == {"croydon", "lambeth"}
    assert asd["boroughs"]["croydon"]["referrals_raised"] == 2
    semh = rows[1]
    assert semh["awards"] == 0 and semh["median_days_to_award"] is None and semh["cost_avoidance_pence_per_week"] == 0


def test_provider_view_has_no_borough_detail_and_no_cost_avoidance() -> None:
    rows = market_insights(records(), today=LATER)
    assert all("boroughs" not in r and "cost_avoidance_pence_per_week" not in r for r in rows)
    assert "croydon" not in str(rows) and "lambeth" not in str(rows) and "r1" not in str(rows)
    assert "'pa'" not in str(rows)  # nor provider ids


# ------------------------------------------------------------------ who counts, and the threshold

def cell(offers_by_referral: list[dict[str, int]], *, status: str = "awarded") -> list[ReferralRecord]:
    return [ReferralRecord(f"r{i}", "croydon", "ASD", "2026-03-02T09:00:00Z", invited=len(offers),
                           offers=offers, status=status) for i, offers in enumerate(offers_by_referral)]


def test_a_provider_counts_once_however_many_referrals_it_pads_the_cell_with() -> None:
    """The finding's fees as standing offers on four referrals beside the rival's one: the old
    view counted 5 offers and showed the rival's 437123 as the median."""
    padded = cell([{"attacker": 1}, {"attacker": 1}, {"attacker": 10_000_000},
                   {"attacker": 10_000_000, "rival": 437123}])
    [row] = market_insights(padded, today=LATER)
    assert row["offers"] == 5 and row["providers"] == 2
    assert row["median_weekly_fee_pence"] is None
    assert row["suppressed"] is True and row["suppressed_reason"] == "too_few_providers"


def test_the_threshold_counts_distinct_providers_not_offers() -> None:
    four = cell([{"p1": 100, "p2": 200, "p3": 300, "p4": 400}] * 3)  # 12 offers, 4 providers
    [row] = market_insights(four, today=LATER)
    assert (row["offers"], row["providers"], row["suppressed"]) == (12, 4, True)
    five = cell([{"p1": 100, "p2": 200, "p3": 300, "p4": 400, "p5": 500}])
    [row] = market_insights(five, today=LATER)
    assert (row["providers"], row["suppressed"], row["suppressed_reason"]) == (5, False, None)
    assert row["median_weekly_fee_pence"] == 300
    [row] = market_insights(five, today=LATER, min_providers=6)
    assert row["suppressed"] is True and row["median_weekly_fee_pence"] is None


def test_the_median_is_of_one_figure_per_provider() -> None:
    # p1 offers 100 on three referrals: offer-level median 100, provider-level median of
    # 100 (p1), 200, 300, 400, 500 -> 300
    rows = cell([{"p1": 100, "p2": 200}, {"p1": 100, "p3": 300}, {"p1": 100, "p4": 400, "p5": 500}])
    [row] = market_insights(rows, today=LATER)
    assert row["median_weekly_fee_pence"] == 300
    assert insights(rows, by_borough=False)[0]["median_weekly_fee_pence"] == 200  # full view: per offer


def test_a_cell_is_final_only_once_its_month_is_over_and_every_referral_settled() -> None:
    five = cell([{"p1": 100, "p2": 200, "p3": 300, "p4": 400, "p5": 500}])
    assert not cohort_final("2026-03", five, date(2026, 4, 7))  # grace: a late referral may be in flight
    assert cohort_final("2026-03", five, date(2026, 4, 8))
    assert not cohort_final("2026-12", cell([{}]), date(2027, 1, 7))  # the year rolls over
    assert cohort_final("2026-12", cell([{}]), date(2027, 1, 8))
    open_one = five + [replace(five[0], referral_id="late", offers={}, status="open")]
    assert not cohort_final("2026-03", open_one, LATER)
    [row] = market_insights(open_one, today=LATER)
    assert row["suppressed_reason"] == "cohort_open" and row["median_weekly_fee_pence"] is None


# ------------------------------------------------------------------ differencing, as an attacker

OWN = 400_000
"""The attacker's own fee beside its rival on "target"."""


def region(rival: int = 437_123, p5: int = 450_000, rival_small: int = 387_000, *,
           target: str = "awarded") -> list[ReferralRecord]:
    """Cells by need (ASD, SEMH) x month (03, 04), referrals in two boroughs.

    "target" (croydon, ASD, 2026-03): the attacker and one rival, awarded to the rival. The ASD
    2026-03 cell has 6 distinct providers over both boroughs; ASD 2026-04 has 3 (the same rival
    among them, at `rival_small`)."""
    def rec(rid: str, borough: str, need: str, month: str, offers: dict[str, int],
            awarded_fee: int | None = None, status: str = "awarded") -> ReferralRecord:
        return ReferralRecord(rid, borough, need, f"2026-{month}-05T09:00:00Z", invited=len(offers), offers=offers,
                              awarded_fee=awarded_fee if status == "awarded" else None, status=status)
    own = {"attacker": OWN}
    return [
        rec("target", "croydon", "ASD", "03", own | ({"rival": rival} if rival else {}), rival, target),
        rec("l1", "lambeth", "ASD", "03", {"p3": 380_000, "p4": 520_000, "p5": p5, "p6": 410_000}, 380_000),
        rec("c2", "croydon", "ASD", "04", {"attacker": 390_000, "rival": rival_small, "p3": 385_000}, 385_000),
        rec("l2", "lambeth", "SEMH", "03", {"p4": 700_000, "p5": 650_000}, 650_000),
        rec("c3", "croydon", "SEMH", "04", {"attacker": 800_000, "p6": 820_000, "p7": 790_000}, 790_000),
    ]


def every_view(records: list[ReferralRecord], today: date = LATER) -> dict[Any, list[dict[str, Any]]]:
    """Every answer a provider can get: whole, by need, by month, by both (the API's filters)."""
    views = {}
    needs, months = {r.primary_need for r in records}, {r.month for r in records}
    for need, month in product([None, *sorted(needs)], [None, *sorted(months)]):
        chosen = [r for r in records
                  if (need is None or r.primary_need == need) and (month is None or r.month == month)]
        views[(need, month)] = market_insights(chosen, today=today)
    return views


def row_of(rows: list[dict[str, Any]], need: str, month: str) -> dict[str, Any]:
    return next(r for r in rows if (r["need"], r["month"]) == (need, month))


def test_the_full_figures_would_give_the_rivals_fee_away() -> None:
    """Why providers do not get the full figures: by borough, a cell's croydon part is the attacker
    and its rival, whose median is the mean of the two fees; cost avoidance is a sum, so the cell's
    total after the award minus the total before leaves the target's share, median - award."""
    full = row_of(insights(region(), by_borough=True), "ASD", "2026-03")
    assert abs((2 * full["boroughs"]["croydon"]["median_weekly_fee_pence"] - OWN) - 437_123) <= 1
    before = row_of(insights(region(target="open"), by_borough=False), "ASD", "2026-03")
    share = full["cost_avoidance_pence_per_week"] - before["cost_avoidance_pence_per_week"]
    assert abs((OWN - 2 * share) - 437_123) <= 1


def test_no_arithmetic_over_the_provider_view_gives_a_rivals_fee_away() -> None:
    """Asked every way it can be asked (whole, by need, by month, both), the provider view is
    the same whatever the rival charged in the cell of 3 providers, and the same whether the
    published median of the 6-provider cell is the rival's fee or another provider's."""
    views = every_view(region())
    for small in (1, 385_500, 10_000_000):
        assert every_view(region(rival_small=small)) == views
    assert every_view(region(rival=450_000, p5=437_123)) == views  # rival and p5 swap fees
    whole = views[(None, None)]
    assert row_of(whole, "ASD", "2026-04")["suppressed_reason"] == "too_few_providers"
    published = row_of(whole, "ASD", "2026-03")
    assert (published["providers"], published["suppressed"]) == (6, False)
    assert published["median_weekly_fee_pence"] == median_pence([410_000, 437_123])
    # a filter only ever selects whole rows: no answer is an aggregate another could be subtracted from
    for answer in views.values():
        assert all(row in whole for row in answer)
    # and the only fee figure is a median: no sum, no cost avoidance, no borough part
    fee_fields = {k for row in whole for k in row if "fee" in k or "cost" in k or "pence" in k}
    assert fee_fields == {"median_weekly_fee_pence"}
    assert not any("boroughs" in row for row in whole)


def test_a_median_that_moved_while_offers_came_would_give_the_newest_fee_away() -> None:
    """Snapshots in time are overlapping cells too. The attacker sees its rival's offer arrive (its
    shortlist's ranked_offers goes up): a live median of 5 providers m, then of 6, m', gives the
    rival's fee as 2m' - m whenever it lands near the middle. It could also withdraw and re-offer
    its own fee to probe. The provider view shows no fee until the cell is final, so every
    snapshot before then is the same whatever the rival offered."""
    def live(records: list[ReferralRecord]) -> int:
        figures = market_insights(records, today=LATER, min_providers=1)  # as if final
        result = row_of(figures, "ASD", "2026-03")["median_weekly_fee_pence"]
        assert result is not None
        return result
    settled_before = region(rival=0)  # the rival has not offered yet
    for fee in (437_123, 430_000):
        assert abs(2 * live(region(rival=fee)) - live(settled_before) - fee) <= 1  # the attack, were it live

    def snapshots(fee: int) -> list[dict[Any, list[dict[str, Any]]]]:
        before, after = region(rival=0, target="open"), region(rival=fee, target="open")
        probes = [[replace(r, offers={**r.offers, "attacker": own}) if r.referral_id == "target" else r
                   for r in after] for own in (1, 10_000_000)]
        return [every_view(s) for s in (before, after, *probes)]
    seen = snapshots(437_123)
    assert snapshots(430_000) == seen and snapshots(250_000) == seen
    asd_march = row_of(seen[1][(None, None)], "ASD", "2026-03")
    assert asd_march["suppressed_reason"] == "cohort_open" and asd_march["median_weekly_fee_pence"] is None
