from __future__ import annotations

from services.matching.insights import ReferralRecord, insights, median_pence


def records() -> list[ReferralRecord]:
    return [
        ReferralRecord("r1", "croydon", "ASD", "2026-03-02T09:00:00Z", invited=3, offer_fees=[400000, 500000, 450000],
                       declines={"no_capacity": 1}, awarded_fee=400000, awarded_at="2026-03-22T09:00:00Z"),
        ReferralRecord("r2", "lambeth", "ASD", "2026-03-10T09:00:00Z", invited=2, offer_fees=[300000, 310000],
                       declines={"no_capacity": 1, "outside_area": 1}, awarded_fee=310000, awarded_at="2026-04-09T00:00:00Z"),
        ReferralRecord("r3", "croydon", "ASD", "2026-03-15T09:00:00Z", invited=0, closed_unfilled=True),
        ReferralRecord("r4", "croydon", "SEMH", "2026-04-01T09:00:00Z", invited=1, offer_fees=[900000]),
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


def test_provider_view_has_no_borough_detail() -> None:
    rows = insights(records(), by_borough=False)
    assert all("boroughs" not in r for r in rows)
    assert "croydon" not in str(rows) and "lambeth" not in str(rows) and "r1" not in str(rows)
