"""The console's SVG charts, their CSV, and the figures built from GET /insights."""
from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET

from services.console import intelligence
from services.console.charts import HIGHLIGHT, Chart, Series, pounds

SVG = "{http://www.w3.org/2000/svg}"


def chart(**changes: object) -> Chart:
    base: dict[str, object] = dict(
        id="demo", title="Referrals & <offers>", description="What it shows.", columns=["need", "raised"],
        rows=[["ASD", 4], ["SEMH", 2]], labels=["ASD", "SEMH"], series=[Series("Raised", [4, 2])])
    return Chart(**{**base, **changes})  # type: ignore[arg-type]


def test_the_svg_is_well_formed_titled_and_escapes_labels() -> None:
    root = ET.fromstring(str(chart(labels=["<script>alert(1)</script>", "SEMH"]).svg()))
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    assert root.find(f"{SVG}title").text == "Referrals & <offers>"
    assert root.get("aria-labelledby") == "demo-title demo-desc"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "<script>alert(1)</script>" in texts  # as text, not markup
    assert "<script>" not in str(chart(labels=["<script>", "SEMH"]).svg())


def test_bar_lengths_are_proportional_and_each_is_labelled_with_its_value() -> None:
    root = ET.fromstring(str(chart().svg()))
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    widths = [float(b.get("width")) for b in bars]
    assert len(bars) == 2 and widths[0] == 2 * widths[1] > 0
    assert {"4", "2"} <= {t.text for t in root.iter(f"{SVG}text")}


def test_highlighted_categories_are_drawn_in_the_highlight_colour_and_named_in_the_legend() -> None:
    root = ET.fromstring(str(chart(highlighted={"SEMH"}, highlight_name="Unfilled").svg()))
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert [b.get("fill") for b in bars] == ["#1d70b8", HIGHLIGHT]
    assert "Unfilled" in {t.text for t in root.iter(f"{SVG}text")}


def test_a_negative_or_missing_value_draws_no_bar_but_says_its_value() -> None:
    root = ET.fromstring(str(chart(series=[Series("Avoided", [-17500, None])], value_format=pounds).svg()))
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert [float(b.get("width")) for b in bars] == [0.0, 0.0]
    assert {"-£175", "n/a"} <= {t.text for t in root.iter(f"{SVG}text")}


def test_csv_has_the_columns_and_rows_and_neutralises_formulas() -> None:
    text = chart(rows=[["=HYPERLINK(\"x\")", -3], ["ASD", None]]).csv()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["need", "raised"], ["'=HYPERLINK(\"x\")", "-3"], ["ASD", ""]]


ROW = {"need": "ASD", "month": "2026-05", "referrals_raised": 3, "awards": 1, "closed_unfilled": 1, "offers": 4,
       "providers": 2, "declines": {"no_capacity": 2, "other": 1}, "median_weekly_fee_pence": 400000,
       "median_days_to_award": "12.00", "cost_avoidance_pence_per_week": 2500,
       "boroughs": {"croydon": {"referrals_raised": 2, "awards": 1, "cost_avoidance_pence_per_week": 2500},
                    "lambeth": {"referrals_raised": 1, "awards": 0, "cost_avoidance_pence_per_week": 0}}}
PROVIDERS = [
    {"status": "approved", "lots": ["ASD"], "capacity": 1, "boroughs_served": ["croydon"]},
    {"status": "approved", "lots": ["ASD"], "capacity": 3, "boroughs_served": []},
    {"status": "approved", "lots": ["SEMH"], "capacity": 9, "boroughs_served": []},
]


def test_sufficiency_counts_places_of_providers_serving_the_need_and_borough() -> None:
    found = intelligence.sufficiency([ROW], PROVIDERS)
    assert found.rows == [["ASD", "croydon", 2, 4, 0], ["ASD", "lambeth", 1, 3, 0]]
    short = intelligence.sufficiency([{**ROW, "boroughs": {"lambeth": {"referrals_raised": 5}}}], PROVIDERS)
    assert short.rows == [["ASD", "lambeth", 5, 3, 2]] and short.highlighted == {"ASD · lambeth"}


def test_weekly_fees_leave_out_the_cells_the_api_suppressed() -> None:
    rows = [{**ROW, "month": "2026-04", "median_weekly_fee_pence": 300000},
            {**ROW, "month": "2026-06", "median_weekly_fee_pence": None, "suppressed": True}, ROW]
    assert intelligence.weekly_fee_by_need(rows).rows == [["ASD", 300000, 350000, 400000, 1]]


def test_providers_get_no_borough_or_cost_figures() -> None:
    pooled = {"scope": "market", "rows": [{k: v for k, v in ROW.items()
                                           if k not in ("boroughs", "cost_avoidance_pence_per_week")}]}
    ids = [c.id for c in intelligence.charts(pooled, None, None)]
    assert ids == ["referrals", "time-to-place", "fees", "declines"]
    ids = [c.id for c in intelligence.charts({"scope": "partnership", "rows": [ROW]}, PROVIDERS, "2026")]
    assert ids == ["referrals", "sufficiency", "time-to-place", "fees", "boroughs", "cost-avoidance", "declines"]


def test_referrals_chart_highlights_months_with_unfilled_referrals_and_periods_select_rows() -> None:
    rows = [ROW, {**ROW, "month": "2027-01", "closed_unfilled": 0}]
    found = intelligence.referrals_by_need_and_month(intelligence.in_period(rows, "2026"))
    assert found.rows == [["ASD", "2026-05", 3, 1, 1]] and found.highlighted == {"ASD 2026-05"}
    assert intelligence.periods({"rows": rows}) == ["2027", "2026", "2027-01", "2026-05"]


def test_the_position_statement_asks_for_places_where_referrals_went_unfilled() -> None:
    statement = intelligence.position_statement({"scope": "partnership", "rows": [ROW]}, PROVIDERS, None)
    assert statement["total_raised"] == 3 and statement["total_unfilled"] == 1
    assert statement["asks"] == ["More places for children whose primary need is ASD: 1 of 3 referrals closed "
                                 "with no place found."]
    assert intelligence.statement_rows(statement) == [["ASD", 3, 1, 1, 400000, ""]]


DISTRIBUTION = {"scope": "partnership", "need": None, "awards": 3, "median_days": "8.00",
                "buckets": [{"label": "0-7", "min_days": 0, "max_days": 7, "awards": 1},
                            {"label": "8-14", "min_days": 8, "max_days": 14, "awards": 2},
                            {"label": "57+", "min_days": 57, "max_days": None, "awards": 0}]}
FEES = {"scope": "market", "rows": [
    {"need": "ASD", "providers": 6, "offers": 9, "lower_quartile_pence": 300000, "median_pence": 350000,
     "upper_quartile_pence": 420000, "suppressed": False, "suppressed_reason": None},
    {"need": "SEMH", "providers": 2, "offers": 2, "lower_quartile_pence": None, "median_pence": None,
     "upper_quartile_pence": None, "suppressed": True, "suppressed_reason": "too_few_providers"}]}


def test_time_to_place_distribution_and_fee_quartiles_come_from_matchings_figures() -> None:
    pooled = {"scope": "market", "rows": [{k: v for k, v in ROW.items()
                                           if k not in ("boroughs", "cost_avoidance_pence_per_week")}]}
    found = {c.id: c for c in intelligence.charts(pooled, None, None, {"time_to_place": DISTRIBUTION, "fees": FEES})}
    assert list(found) == ["referrals", "time-to-place", "time-to-place-distribution", "fees", "fee-quartiles",
                           "declines"]
    distribution = found["time-to-place-distribution"]
    assert distribution.rows == [["0-7", 1], ["8-14", 2], ["57+", 0]] and "Median 8.00 days" in distribution.note
    quartiles = found["fee-quartiles"]
    assert quartiles.rows == [["ASD", 6, 300000, 350000, 420000, ""], ["SEMH", 2, None, None, None, "yes"]]
    svg = str(quartiles.svg())
    assert "£3,500" in svg and ET.fromstring(svg) is not None
    assert list(csv.reader(io.StringIO(quartiles.csv())))[2] == ["SEMH", "2", "", "", "", "yes"]
    empty = intelligence.time_to_place_distribution({**DISTRIBUTION, "awards": 0, "median_days": None})
    assert empty.empty and empty.note == ""
