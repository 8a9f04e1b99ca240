"""Placement pages: a borough's placements, reviews due, a review, fee changes; a provider's
placements and fee uplift requests; the commissioner's spend (GET /placements/spend).

Everything through the placement service's API (base + 5) with the signed-in person's token: the
service decides what each person sees (a provider never the award's justification).
"""
from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.console import forms
from services.console.charts import Chart, Series, pounds
from services.console.client import ApiProblem
from services.console.pages import api, back, problem_errors, take_flash
from services.console.render import render
from services.console.security import checked_form, signed_in

router = APIRouter()

PROGRESS = [("not_started", "Not started"), ("progressing", "Progressing"), ("achieved", "Achieved")]
FEE_DECISIONS = [("agreed", "Agree"), ("agreed_in_part", "Agree in part"), ("declined", "Decline")]
TOP = 10


def spend_charts(spend: dict[str, Any]) -> list[Chart]:
    """Spend by borough, by provider (the top ten and their share: the concentration), by stream."""
    total = int(spend.get("total_pence") or 0)
    providers = sorted(spend.get("by_provider") or [], key=lambda r: (-int(r["spend_pence"]), r["provider_id"]))
    top, rest = providers[:TOP], providers[TOP:]
    top_total = sum(int(r["spend_pence"]) for r in top)
    share = f"{100 * top_total / total:.1f}%" if total else "0%"
    rows = [[r["provider_id"], int(r["spend_pence"])] for r in top]
    if rest:
        rows.append([f"{len(rest)} other providers", sum(int(r["spend_pence"]) for r in rest)])
    period = f"{spend.get('from')} to {spend.get('to')}"
    boroughs = spend.get("by_borough") or []
    streams = spend.get("by_stream") or []
    return [
        Chart(id="spend-providers", title="Spend by provider: the top ten",
              description=f"Placement spend with each of the ten largest providers, {period}; the rest together.",
              columns=["provider", "spend (pence)"], rows=rows, labels=[str(r[0]) for r in rows],
              series=[Series("Spend", [r[1] for r in rows])], value_format=pounds,
              note=f"The top ten providers hold {share} of the spend." if total else ""),
        Chart(id="spend-boroughs", title="Spend by borough", description=f"Placement spend by borough, {period}.",
              columns=["borough", "spend (pence)"], rows=[[r["borough"], int(r["spend_pence"])] for r in boroughs],
              labels=[r["borough"] for r in boroughs],
              series=[Series("Spend", [int(r["spend_pence"]) for r in boroughs])], value_format=pounds),
        Chart(id="spend-streams", title="Spend by funding stream",
              description=f"Placement spend by funding stream (education, social care, health, unfunded), {period}.",
              columns=["stream", "spend (pence)"], rows=[[r["stream"], int(r["spend_pence"])] for r in streams],
              labels=[r["stream"].replace("_", " ") for r in streams],
              series=[Series("Spend", [int(r["spend_pence"]) for r in streams])], value_format=pounds),
    ]


@router.get("/placements")
async def my_placements(request: Request) -> Response:
    person = signed_in(request, "borough", "provider")
    client = api(request, person)
    found = (await client.get("placement", "/placements"))["placements"]
    due = (await client.get("placement", "/placements/reviews-due", within_days=30))["reviews"] \
        if person.role == "borough" else []
    return render(request, "placements.html", title="My placements", placements=found, reviews_due=due,
                  flash=take_flash(request))


async def _placement_page(request: Request, placement_id: str, *, status_code: int = 200,
                          errors: dict[str, str] | None = None, general: list[str] | None = None,
                          values: dict[str, Any] | None = None) -> Response:
    person = signed_in(request, "borough", "provider")
    placement = await api(request, person).get("placement", f"/placements/{placement_id}")
    values = values or {"reviewed_on": date.today().isoformat()}
    for indicator, score in ((placement.get("needs_over_time") or [{}])[-1].get("needs_profile") or {}).items():
        values.setdefault(f"needs_profile.{indicator}", str(score))
    return render(request, "placement.html", status_code=status_code, title="Placement", placement=placement,
                  errors=errors or {}, general=general or [], values=values, progress=PROGRESS,
                  fee_decisions=FEE_DECISIONS, domains=forms.INDICATOR_DOMAINS,
                  indicator_labels=forms.INDICATOR_LABELS, flash=take_flash(request))


@router.get("/placements/{placement_id}")
async def placement(request: Request, placement_id: str) -> Response:
    return await _placement_page(request, placement_id)


@router.post("/placements/{placement_id}/review")
async def record_review(request: Request, placement_id: str) -> Response:
    person = signed_in(request, "borough")
    form = await checked_form(request)
    errors: dict[str, str] = {}
    profile: dict[str, int] = {}
    for indicator, label in forms.INDICATOR_LABELS.items():
        raw = forms.text(form, f"needs_profile.{indicator}")
        if raw not in ("0", "1", "2", "3"):
            errors[f"needs_profile.{indicator}"] = f"Select a rating for {label.lower()}"
        else:
            profile[indicator] = int(raw)
    outcomes = []
    for i, outcome in enumerate(form.getlist("outcome")):
        progress = forms.text(form, f"progress.{i}")
        if progress not in {p for p, _ in PROGRESS}:
            errors[f"progress.{i}"] = f"Select the progress towards “{outcome}”"
            continue
        outcomes.append({"outcome": str(outcome), "progress": progress, "note": forms.text(form, f"note.{i}") or None})
    continues = forms.text(form, "continues")
    if continues not in ("yes", "no"):
        errors["continues"] = "Select whether the placement continues"
    reviewed_on = forms.text(form, "reviewed_on")
    if not reviewed_on:
        errors["reviewed_on"] = "Enter the date of the review, like 2027-02-20"
    general: list[str] = []
    if not errors:
        body = {"reviewed_on": reviewed_on, "outcomes": outcomes, "needs_profile": profile,
                "continues": continues == "yes", "next_review_due": forms.text(form, "next_review_due") or None,
                "note": forms.text(form, "note") or None}
        try:
            await api(request, person).post("placement", f"/placements/{placement_id}/reviews", body)
            return back(f"/placements/{placement_id}", "Review recorded.", request)
        except ApiProblem as problem:
            errors, general = problem_errors(problem, {"reviewed_on", "next_review_due", "note", "continues"})
    return await _placement_page(request, placement_id, status_code=422, errors=errors, general=general,
                                 values=forms.values_of(form))


@router.post("/placements/{placement_id}/fee-change")
async def request_fee_change(request: Request, placement_id: str) -> Response:
    person = signed_in(request, "provider")
    form = await checked_form(request)
    errors: dict[str, str] = {}
    fee = forms.pounds_to_pence(form, "weekly_fee", errors, "New weekly fee")
    for name, message in (("effective_from", "Enter the date the new fee starts, like 2027-04-01"),
                          ("reason", "Say why the fee should change")):
        if not forms.text(form, name):
            errors[name] = message
    general: list[str] = []
    if not errors:
        body = {"weekly_fee_pence": fee, "effective_from": forms.text(form, "effective_from"),
                "reason": forms.text(form, "reason")}
        try:
            await api(request, person).post("placement", f"/placements/{placement_id}/fee-changes", body)
            return back(f"/placements/{placement_id}", "Fee change requested. The borough will decide.", request)
        except ApiProblem as problem:
            errors, general = problem_errors(problem, {"effective_from", "reason"}, fallback="weekly_fee")
    return await _placement_page(request, placement_id, status_code=422, errors=errors, general=general,
                                 values=forms.values_of(form))


@router.post("/placements/{placement_id}/fee-changes/{change_id}/decision")
async def decide_fee_change(request: Request, placement_id: str, change_id: str) -> Response:
    person = signed_in(request, "borough")
    form = await checked_form(request)
    errors: dict[str, str] = {}
    decision = forms.text(form, "decision")
    if decision not in {d for d, _ in FEE_DECISIONS}:
        errors["decision"] = "Select whether you agree to the fee change"
    fee = forms.pounds_to_pence(form, "agreed_fee", errors, "Agreed weekly fee") \
        if decision == "agreed_in_part" else None
    general: list[str] = []
    if not errors:
        body = {"decision": decision, "weekly_fee_pence": fee, "note": forms.text(form, "decision_note") or None}
        try:
            await api(request, person).post("placement",
                                            f"/placements/{placement_id}/fee-changes/{change_id}/decision", body)
            return back(f"/placements/{placement_id}", "Fee change decided.", request)
        except ApiProblem as problem:
            errors, general = problem_errors(problem, {"decision", "note"}, fallback="decision")
            if "note" in errors:
                errors["decision_note"] = errors.pop("note")
    return await _placement_page(request, placement_id, status_code=422, errors=errors, general=general,
                                 values=forms.values_of(form))


async def _spend(request: Request, first: str | None, last: str | None) -> dict[str, Any]:
    person = signed_in(request, "commissioner", "auditor")
    year = date.today().year
    params = {"from": first or f"{year}-01-01", "to": last or f"{year}-12-31"}
    result: dict[str, Any] = await api(request, person).get("placement", "/placements/spend", **params)
    return result


@router.get("/spend")
async def spend_page(request: Request, first: str | None = None, last: str | None = None) -> Response:
    try:
        spend = await _spend(request, first, last)
    except ApiProblem as problem:
        errors, general = problem_errors(problem, {"from", "to"})
        return render(request, "spend.html", status_code=422, title="Spend", spend=None, charts=[], errors=errors,
                      general=general, values={"from": first or "", "to": last or ""})
    return render(request, "spend.html", title="Spend", spend=spend, charts=spend_charts(spend), errors={},
                  general=[], values={"from": spend["from"], "to": spend["to"]})


@router.get("/spend/{chart_id}.csv")
async def spend_csv(request: Request, chart_id: str, first: str | None = None, last: str | None = None) -> Response:
    spend = await _spend(request, first, last)
    for chart in spend_charts(spend):
        if chart.id == chart_id:
            return Response(chart.csv(), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{chart_id}.csv"'})
    return render(request, "error.html", status_code=404, title="Page not found", message=f"No chart {chart_id}.")
