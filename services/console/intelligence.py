"""Market intelligence: the charts of the console, built from GET /insights and GET /providers.

Pure functions of what the APIs answered. Commissioners get the partnership's figures (with a
per-borough breakdown); providers get the pooled market rows, whose fee medians the API already
suppresses in small or still-open cells: the console never computes a fee figure of its own from
anything finer than what it was given.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from statistics import median
from typing import Any

from services.console.charts import Chart, Series, pounds

COST_AVOIDANCE_DEFINITION = (
    "Cost avoidance is, for each awarded referral, the median weekly fee of the standing offers it received "
    "minus the weekly fee of the offer awarded, added up over the awards; it is a weekly figure, in pounds. "
    "A positive figure means the partnership placed children for less than the typical price offered.")

DECLINE_REASONS = {"no_capacity": "No capacity", "cannot_meet_needs": "Cannot meet needs",
                   "outside_area": "Outside area", "other": "Other"}

MISSING_FIGURES = (
    "spend by borough and by provider (awarded weekly fees summed, top-ten concentration)",
    "demand by area (district) rather than by borough",
)
"""What the charts would show with one more figure from matching's API (see the lead's report)."""


def _rows(insights: dict[str, Any]) -> list[dict[str, Any]]:
    return list(insights.get("rows") or [])


def in_period(rows: Iterable[dict[str, Any]], period: str | None) -> list[dict[str, Any]]:
    """Rows of a year (`2026`) or a month (`2026-07`); all when `period` is empty."""
    return [r for r in rows if not period or str(r.get("month", "")).startswith(period)]


def periods(insights: dict[str, Any]) -> list[str]:
    months = sorted({str(r["month"]) for r in _rows(insights)})
    return sorted({m[:4] for m in months}, reverse=True) + list(reversed(months))


def referrals_by_need_and_month(rows: Sequence[dict[str, Any]]) -> Chart:
    labels = [f"{r['need']} {r['month']}" for r in rows]
    table = [[r["need"], r["month"], r["referrals_raised"], r["awards"], r["closed_unfilled"]] for r in rows]
    return Chart(
        id="referrals", title="Referrals by need and month",
        description="Referrals raised, awarded and closed unfilled in each need and month they were raised.",
        columns=["need", "month", "referrals raised", "awarded", "closed unfilled"], rows=table, labels=labels,
        series=[Series("Raised", [r["referrals_raised"] for r in rows]),
                Series("Awarded", [r["awards"] for r in rows]),
                Series("Closed unfilled", [r["closed_unfilled"] for r in rows], colour="#942514")],
        highlighted={label for label, r in zip(labels, rows, strict=True) if r["closed_unfilled"]},
        highlight_name="Raised, where some closed unfilled")


def _serves(provider: dict[str, Any], need: str, borough: str) -> bool:
    served = provider.get("boroughs_served") or []
    return need in (provider.get("lots") or []) and (not served or borough in served)


def sufficiency(rows: Sequence[dict[str, Any]], providers: Sequence[dict[str, Any]]) -> Chart:
    """Demand (referrals raised) against approved capacity (free places of approved providers whose
    lots cover the need and who serve the borough), by need and borough."""
    demand: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        for borough, figures in (r.get("boroughs") or {}).items():
            demand[(r["need"], borough)] += int(figures.get("referrals_raised", 0))
    approved = [p for p in providers if p.get("status") == "approved"]
    cells = sorted(demand)
    capacity = {cell: sum(int(p.get("capacity") or 0) for p in approved if _serves(p, *cell)) for cell in cells}
    labels = [f"{need} · {borough}" for need, borough in cells]
    return Chart(
        id="sufficiency", title="Demand and approved capacity by need and borough",
        description="Referrals raised against free places of approved providers who serve that need and borough; "
                    "a gap is where demand exceeds the places.",
        columns=["need", "borough", "referrals raised", "approved places", "gap"],
        rows=[[n, b, demand[(n, b)], capacity[(n, b)], max(0, demand[(n, b)] - capacity[(n, b)])] for n, b in cells],
        labels=labels,
        series=[Series("Referrals raised", [demand[c] for c in cells]),
                Series("Approved places", [capacity[c] for c in cells], colour="#00703c")],
        highlighted={label for label, c in zip(labels, cells, strict=True) if demand[c] > capacity[c]},
        highlight_name="Demand above approved places (a gap)")


def time_to_place(rows: Sequence[dict[str, Any]]) -> Chart:
    placed = [r for r in rows if r.get("median_days_to_award") is not None]
    return Chart(
        id="time-to-place", title="Time to place",
        description="Median days from a referral being raised to its award, by need and month.",
        columns=["need", "month", "awards", "median days to award"],
        rows=[[r["need"], r["month"], r["awards"], r["median_days_to_award"]] for r in placed],
        labels=[f"{r['need']} {r['month']}" for r in placed],
        series=[Series("Median days", [float(r["median_days_to_award"]) for r in placed])],
        value_format=lambda v: f"{v:g} days")


def weekly_fee_by_need(rows: Sequence[dict[str, Any]]) -> Chart:
    """Median and spread (lowest and highest monthly median) of the weekly fee, by need; cells the
    API suppressed count nowhere."""
    by_need: dict[str, list[int]] = defaultdict(list)
    suppressed: dict[str, int] = defaultdict(int)
    for r in rows:
        if r.get("median_weekly_fee_pence") is None:
            if r.get("suppressed"):
                suppressed[r["need"]] += 1
            continue
        by_need[r["need"]].append(int(r["median_weekly_fee_pence"]))
    needs = sorted(set(by_need) | set(suppressed))
    figures = {n: (min(v), int(median(v)), max(v)) if (v := by_need.get(n)) else (None, None, None) for n in needs}
    return Chart(
        id="fees", title="Weekly fee by need",
        description="Median weekly fee of standing offers by need, with the lowest and highest monthly median; "
                    "cells with too few providers or still open are suppressed.",
        columns=["need", "lowest monthly median (pence)", "median (pence)", "highest monthly median (pence)",
                 "months suppressed"],
        rows=[[n, *figures[n], suppressed.get(n, 0)] for n in needs], labels=needs,
        series=[Series("Lowest monthly median", [figures[n][0] for n in needs], colour="#5694ca"),
                Series("Median", [figures[n][1] for n in needs]),
                Series("Highest monthly median", [figures[n][2] for n in needs], colour="#4c2c92")],
        value_format=pounds)


def awards_by_borough(rows: Sequence[dict[str, Any]]) -> Chart:
    awards: dict[str, int] = defaultdict(int)
    avoided: dict[str, int] = defaultdict(int)
    for r in rows:
        for borough, figures in (r.get("boroughs") or {}).items():
            awards[borough] += int(figures.get("awards", 0))
            avoided[borough] += int(figures.get("cost_avoidance_pence_per_week", 0))
    boroughs = sorted(awards, key=lambda b: (-awards[b], b))
    return Chart(
        id="boroughs", title="Placements awarded by borough",
        description="Awards made by each borough (spend figures need a new endpoint: see the note).",
        columns=["borough", "awards", "cost avoidance (pence a week)"],
        rows=[[b, awards[b], avoided[b]] for b in boroughs], labels=boroughs,
        series=[Series("Awards", [awards[b] for b in boroughs])],
        note="Spend by borough and by provider, with the concentration in the top ten providers, needs the "
             "awarded fees by borough and provider, which the matching API does not give yet.")


def cost_avoidance(rows: Sequence[dict[str, Any]]) -> Chart:
    by_need: dict[str, int] = defaultdict(int)
    awards: dict[str, int] = defaultdict(int)
    for r in rows:
        if "cost_avoidance_pence_per_week" in r:
            by_need[r["need"]] += int(r["cost_avoidance_pence_per_week"])
            awards[r["need"]] += int(r["awards"])
    needs = sorted(by_need)
    return Chart(
        id="cost-avoidance", title="Cost avoidance by need",
        description="Weekly cost avoidance by need. " + COST_AVOIDANCE_DEFINITION,
        columns=["need", "awards", "cost avoidance (pence a week)"],
        rows=[[n, awards[n], by_need[n]] for n in needs], labels=needs,
        series=[Series("Cost avoidance a week", [by_need[n] for n in needs], colour="#00703c")],
        value_format=pounds)


def declines_by_reason(rows: Sequence[dict[str, Any]]) -> Chart:
    totals: dict[str, int] = defaultdict(int)
    for r in rows:
        for reason, n in (r.get("declines") or {}).items():
            totals[reason] += int(n)
    reasons = sorted(totals, key=lambda k: (-totals[k], k))
    return Chart(
        id="declines", title="Declined invitations by reason",
        description="Invitations providers declined, by the reason they gave.",
        columns=["reason", "declines"], rows=[[DECLINE_REASONS.get(k, k), totals[k]] for k in reasons],
        labels=[DECLINE_REASONS.get(k, k) for k in reasons], series=[Series("Declines", [totals[k] for k in reasons])])


def time_to_place_distribution(distribution: dict[str, Any]) -> Chart:
    """Awards by days from raised to award (matching's GET /insights/time-to-place), all time."""
    buckets = list(distribution.get("buckets") or [])
    labels = [f"{b['label']} days" for b in buckets]
    return Chart(
        id="time-to-place-distribution", title="Time to place: distribution",
        description="How many awards came how many days after the referral was raised (all time).",
        columns=["days from raised to award", "awards"], rows=[[b["label"], b["awards"]] for b in buckets]
        if distribution.get("awards") else [], labels=labels,
        series=[Series("Awards", [b["awards"] for b in buckets])],
        note=f"Median {distribution['median_days']} days over {distribution['awards']} awards."
        if distribution.get("median_days") else "")


def fee_quartiles(fees: dict[str, Any]) -> Chart:
    """Weekly fee by need, lower quartile / median / upper quartile (matching's GET /insights/fees);
    needs the API suppressed stay empty, marked as suppressed."""
    rows = list(fees.get("rows") or [])
    needs = [r["need"] for r in rows]
    keys = ("lower_quartile_pence", "median_pence", "upper_quartile_pence")
    return Chart(
        id="fee-quartiles", title="Weekly fee by need: quartiles",
        description="The spread of weekly fees offered by need (all time); needs with too few providers are "
                    "suppressed.",
        columns=["need", "providers", "lower quartile (pence)", "median (pence)", "upper quartile (pence)",
                 "suppressed"],
        rows=[[r["need"], r["providers"], *(r[k] for k in keys), "yes" if r["suppressed"] else ""] for r in rows],
        labels=needs,
        series=[Series("Lower quartile", [r["lower_quartile_pence"] for r in rows], colour="#5694ca"),
                Series("Median", [r["median_pence"] for r in rows]),
                Series("Upper quartile", [r["upper_quartile_pence"] for r in rows], colour="#4c2c92")],
        value_format=pounds)


def charts(insights: dict[str, Any], providers: Sequence[dict[str, Any]] | None, period: str | None,
           figures: dict[str, Any] | None = None) -> list[Chart]:
    """The charts a person may see: providers (pooled scope) get no borough or cost figures.
    `figures`: matching's further answers (`time_to_place`, `fees`) where it gave them."""
    rows = in_period(_rows(insights), period)
    figures = figures or {}
    found = [referrals_by_need_and_month(rows)]
    pooled = insights.get("scope") == "market"
    if not pooled and providers is not None:
        found.append(sufficiency(rows, providers))
    found.append(time_to_place(rows))
    if figures.get("time_to_place"):
        found.append(time_to_place_distribution(figures["time_to_place"]))
    found.append(weekly_fee_by_need(rows))
    if figures.get("fees"):
        found.append(fee_quartiles(figures["fees"]))
    if not pooled:
        if insights.get("scope") == "partnership":
            found.append(awards_by_borough(rows))
        found.append(cost_avoidance(rows))
    found.append(declines_by_reason(rows))
    return found


def position_statement(insights: dict[str, Any], providers: Sequence[dict[str, Any]] | None,
                       period: str | None) -> dict[str, Any]:
    """The market position statement of a period: demand, gaps, prices, and what the partnership asks
    the market to develop (needs with unfilled referrals or demand above approved places)."""
    rows = in_period(_rows(insights), period)
    needs: dict[str, dict[str, Any]] = {}
    for r in rows:
        n = needs.setdefault(r["need"], {"need": r["need"], "raised": 0, "awarded": 0, "unfilled": 0, "fees": []})
        n["raised"] += r["referrals_raised"]
        n["awarded"] += r["awards"]
        n["unfilled"] += r["closed_unfilled"]
        if r.get("median_weekly_fee_pence") is not None:
            n["fees"].append(int(r["median_weekly_fee_pence"]))
    gaps = sufficiency(rows, providers).rows if providers is not None and insights.get("scope") != "market" else []
    gap_boroughs: dict[str, list[str]] = defaultdict(list)
    for need, borough, _demand, _places, gap in gaps:
        if gap > 0:
            gap_boroughs[need].append(borough)
    summary = []
    for need in sorted(needs):
        n = needs[need]
        summary.append({"need": need, "raised": n["raised"], "awarded": n["awarded"], "unfilled": n["unfilled"],
                        "median_fee_pence": int(median(n["fees"])) if n["fees"] else None,
                        "gap_boroughs": sorted(gap_boroughs.get(need, []))})
    asks = []
    for s in summary:
        if s["unfilled"] or s["gap_boroughs"]:
            where = f" serving {', '.join(s['gap_boroughs'])}" if s["gap_boroughs"] else ""
            asks.append(f"More places for children whose primary need is {s['need']}{where}: "
                        f"{s['unfilled']} of {s['raised']} referrals closed with no place found.")
    return {"period": period or "all time", "needs": summary, "asks": asks,
            "total_raised": sum(s["raised"] for s in summary), "total_unfilled": sum(s["unfilled"] for s in summary)}


STATEMENT_COLUMNS = ["need", "referrals raised", "awarded", "closed unfilled", "median weekly fee (pence)",
                     "boroughs with a gap"]


def statement_rows(statement: dict[str, Any]) -> list[list[Any]]:
    return [[s["need"], s["raised"], s["awarded"], s["unfilled"], s["median_fee_pence"], " ".join(s["gap_boroughs"])]
            for s in statement["needs"]]
