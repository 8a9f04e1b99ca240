"""The console's pages, by role. Each handler reads or writes through the services' APIs with the
person's own token, so the services decide what the person may see and do; a refusal comes back
as problem+json and is shown next to the field it names."""
from __future__ import annotations

import asyncio
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from services.console import forms, intelligence
from services.console.client import Api, ApiProblem
from services.console.render import NAVIGATION, render
from services.console.security import Person, checked_form, signed_in
from shared.vocabulary import GENDERS, NEED_CODES, PLACEMENT_TYPES

router = APIRouter()

NEED_NAMES = {"SPLD": "Specific learning difficulty", "MLD": "Moderate learning difficulty",
              "SLD": "Severe learning difficulty", "PMLD": "Profound and multiple learning difficulty",
              "SEMH": "Social, emotional and mental health", "SLCN": "Speech, language and communication needs",
              "HI": "Hearing impairment", "VI": "Visual impairment", "MSI": "Multi-sensory impairment",
              "PD": "Physical disability", "ASD": "Autistic spectrum disorder", "OTH": "Other difficulty"}
PLACEMENT_NAMES = {"day": "Day school", "residential_38": "Residential, 38 weeks",
                   "residential_52": "Residential, 52 weeks", "childrens_home": "Children's home",
                   "foster_care": "Foster care"}
DECLINE_OPTIONS = list(intelligence.DECLINE_REASONS.items())


def api(request: Request, person: Person) -> Api:
    return Api(request.app.state.settings, request.app.state.http, person.token,
               form_id=getattr(request.state, "form_id", None))


def back(url: str, flash: str | None = None, request: Request | None = None) -> RedirectResponse:
    if flash and request is not None:
        request.session["flash"] = flash
    return RedirectResponse(url, status_code=303)


def take_flash(request: Request) -> str | None:
    flash = request.session.pop("flash", None)
    return flash if isinstance(flash, str) else None


def problem_errors(problem: ApiProblem, known: set[str],
                   fallback: str | None = None) -> tuple[dict[str, str], list[str]]:
    """The API's problem as field errors for the fields the form has, the rest as general messages."""
    fields, general = {}, []
    for name, message in problem.field_errors().items():
        target = name if name in known else (fallback if fallback and fallback not in fields else None)
        if target:
            fields[target] = message
        else:
            general.append(message)
    if not fields and not general:
        general.append(problem.detail)
    return fields, general


@router.get("/")
async def home(request: Request) -> Response:
    person = signed_in(request)
    return back(NAVIGATION[person.role][0][0])


# --- commissioner --------------------------------------------------------------------------------


@router.get("/applications")
async def applications(request: Request, errors_for: str | None = None) -> Response:
    person = signed_in(request, "commissioner")
    listing = await api(request, person).get("enrolment", "/providers", status="applied", limit=200)
    return render(request, "applications.html", title="Applications to decide", providers=listing["items"],
                  flash=take_flash(request), errors={}, general=[], failed=None, values={})


async def _decide(request: Request, provider_id: str, action: str, page: str, template: str) -> Response:
    person = signed_in(request, "commissioner")
    form = await checked_form(request)
    reason = forms.text(form, "reason")
    body = {"reason": reason} if reason or action in ("reject", "suspend") else None
    client = api(request, person)
    try:
        provider = await client.post("enrolment", f"/providers/{provider_id}/{action}", body)
    except ApiProblem as problem:
        needs_reason = action in ("reject", "suspend")
        errors, general = problem_errors(problem, {"reason"}, fallback="reason" if needs_reason else None)
        if template == "applications.html":
            listing = await client.get("enrolment", "/providers", status="applied", limit=200)
            context: dict[str, Any] = {"providers": listing["items"]}
        else:
            context = await _provider_context(client, provider_id)
        return render(request, template, status_code=problem.status if problem.status < 500 else 502,
                      title="Applications to decide" if template == "applications.html" else "Provider",
                      errors=errors, general=general, failed=provider_id, values={"reason": reason},
                      flash=None, **context)
    past = {"approve": "approved", "reject": "rejected", "suspend": "suspended", "reinstate": "reinstated"}[action]
    return back(page, f"{provider['name']} {past}.", request)


@router.post("/providers/{provider_id}/approve")
async def approve(request: Request, provider_id: str) -> Response:
    return await _decide(request, provider_id, "approve", "/applications", "applications.html")


@router.post("/providers/{provider_id}/reject")
async def reject(request: Request, provider_id: str) -> Response:
    return await _decide(request, provider_id, "reject", "/applications", "applications.html")


@router.post("/providers/{provider_id}/suspend")
async def suspend(request: Request, provider_id: str) -> Response:
    return await _decide(request, provider_id, "suspend", f"/providers/{provider_id}", "provider.html")


@router.post("/providers/{provider_id}/reinstate")
async def reinstate(request: Request, provider_id: str) -> Response:
    return await _decide(request, provider_id, "reinstate", f"/providers/{provider_id}", "provider.html")


@router.get("/providers")
async def providers(request: Request) -> Response:
    person = signed_in(request, "commissioner", "auditor")
    client = api(request, person)
    approved, suspended = await asyncio.gather(client.get("enrolment", "/providers", status="approved", limit=1000),
                                               client.get("enrolment", "/providers", status="suspended", limit=1000))
    return render(request, "providers.html", title="Providers", approved=approved["items"],
                  suspended=suspended["items"])


async def _provider_context(client: Api, provider_id: str) -> dict[str, Any]:
    provider, history = await asyncio.gather(client.get("enrolment", f"/providers/{provider_id}"),
                                             client.get("enrolment", f"/providers/{provider_id}/history"))
    events = history["events"]
    scored = [e for e in events if e["type"] == "provider-rescored"]
    return {"provider": provider, "explanation": scored[-1]["data"] if scored else None,
            "history": list(reversed(events))}


@router.get("/providers/{provider_id}")
async def provider(request: Request, provider_id: str) -> Response:
    person = signed_in(request, "commissioner", "auditor")
    context = await _provider_context(api(request, person), provider_id)
    return render(request, "provider.html", title=context["provider"]["name"], errors={}, general=[], values={},
                  flash=take_flash(request), failed=None, **context)


def _weights(form_values: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    errors: dict[str, str] = {}
    parsed: dict[str, str] = {}
    for name, label in (("quality_weight", "Quality weight"), ("price_weight", "Price weight"),
                        ("min_quality", "Minimum quality")):
        raw = form_values.get(name, "").strip()
        if not raw:
            if name != "min_quality":
                errors[name] = f"Enter the {label.lower()}"
            continue
        try:
            Decimal(raw)
        except InvalidOperation:
            errors[name] = f"{label} must be a number, like 0.60"
            continue
        parsed[name] = raw
    return parsed, errors


@router.get("/policy")
async def policy(request: Request, referral: str | None = None, quality_weight: str | None = None,
                 price_weight: str | None = None, min_quality: str | None = None) -> Response:
    person = signed_in(request, "commissioner")
    client = api(request, person)
    current = await client.get("matching", "/policy")
    preview: dict[str, Any] | None = None
    errors: dict[str, str] = {}
    general: list[str] = []
    values = {"referral": referral or "", "quality_weight": quality_weight or current["quality_weight"],
              "price_weight": price_weight or current["price_weight"],
              "min_quality": min_quality if min_quality is not None else (current["min_quality"] or "")}
    values |= {"new.quality_weight": current["quality_weight"], "new.price_weight": current["price_weight"],
               "new.min_quality": current["min_quality"] or ""}
    if referral:
        weights, errors = _weights(values)
        if not errors:
            try:
                shortlist = await client.get("matching", f"/referrals/{referral.strip()}/shortlist")
                proposed = await client.post("matching", "/policy/preview",
                                             {"referral_id": referral.strip(), **weights})
                preview = {"current": shortlist["entries"], "proposed": proposed["entries"],
                           "excluded": proposed["excluded"]}
            except ApiProblem as problem:
                errors, general = problem_errors(problem, {"referral", "quality_weight", "price_weight",
                                                           "min_quality"}, fallback="referral")
    return render(request, "policy.html", title="Ranking policy", policy=current, values=values, preview=preview,
                  errors=errors, general=general, flash=take_flash(request), history=await _policy_history(client))


async def _policy_history(client: Api) -> list[dict[str, Any]]:
    """Every version with its weights, newest first, from matching's GET /policy/history where it has
    one (`{"items": [{"version", "quality_weight", "price_weight", "min_quality", "changed_at", "actor"}]}`)."""
    try:
        found = await client.get("matching", "/policy/history")
    except ApiProblem as problem:
        if problem.status in (404, 405):
            return []
        raise
    items = found.get("items") if isinstance(found, dict) else None
    return sorted(items or [], key=lambda p: -int(p.get("version", 0)))


@router.post("/policy")
async def change_policy(request: Request) -> Response:
    """The change form's fields are `new.<field>` (the preview form above it has the plain names)."""
    person = signed_in(request, "commissioner")
    form = await checked_form(request)
    values = {k: forms.text(form, f"new.{k}") for k in ("quality_weight", "price_weight", "min_quality")}
    weights, errors = _weights(values)
    client = api(request, person)
    general: list[str] = []
    if not errors:
        try:
            changed = await client.put("matching", "/policy", {**weights, "min_quality": weights.get("min_quality")})
            return back("/policy", f"Ranking policy version {changed['version']} is in force; open shortlists "
                                   "are being re-ranked.", request)
        except ApiProblem as problem:
            errors, general = problem_errors(problem, set(values), fallback="quality_weight")
    current = await client.get("matching", "/policy")
    return render(request, "policy.html", status_code=422, title="Ranking policy", policy=current,
                  values={f"new.{k}": v for k, v in values.items()} | {"referral": ""}, preview=None,
                  errors={f"new.{k}": v for k, v in errors.items()}, general=general, flash=None,
                  history=await _policy_history(client))


@router.get("/shortlists")
async def shortlists(request: Request, referral: str | None = None) -> Response:
    signed_in(request, "commissioner", "auditor")
    if referral and referral.strip():
        return back(f"/shortlists/{referral.strip()}")
    return render(request, "shortlist_search.html", title="Find a shortlist", errors={}, values={})


@router.get("/shortlists/{referral_id}")
async def shortlist_page(request: Request, referral_id: str) -> Response:
    person = signed_in(request, "commissioner", "auditor")
    try:
        context = await _shortlist_context(api(request, person), referral_id, person)
    except ApiProblem as problem:
        if problem.status != 404:
            raise
        return render(request, "shortlist_search.html", status_code=404, title="Find a shortlist",
                      errors={"referral": f"No referral {referral_id} was found"}, values={"referral": referral_id})
    return render(request, "shortlist.html", title="Shortlist", referral_id=referral_id, **context)


async def _shortlist_context(client: Api, referral_id: str, person: Person) -> dict[str, Any]:
    """The shortlist and the invited providers' names; an empty one while matching has not yet taken
    in a referral just raised (its 404 then), so that the page polls until it has."""
    try:
        if person.role == "provider":
            return {"shortlist": await client.get("matching", f"/referrals/{referral_id}/shortlist"), "names": {}}
        shortlist, eligible = await asyncio.gather(
            client.get("matching", f"/referrals/{referral_id}/shortlist"),
            client.get("matching", f"/referrals/{referral_id}/eligible-providers"))
    except ApiProblem as problem:
        if problem.status != 404 or person.role == "provider":
            raise
        return {"shortlist": {"referral_id": referral_id, "policy_version": None, "entries": [], "excluded": [],
                              "pending": True}, "names": {}}
    names = {p["provider_id"]: p.get("name") or p["provider_id"] for p in eligible["providers"]}
    return {"shortlist": shortlist, "names": names, "invited": len(eligible["providers"])}


@router.get("/fragments/shortlist/{referral_id}")
async def shortlist_fragment(request: Request, referral_id: str) -> Response:
    """The shortlist table alone, polled by the page (htmx) so it updates without a reload."""
    person = signed_in(request, "commissioner", "auditor", "borough", "provider")
    context = await _shortlist_context(api(request, person), referral_id, person)
    return render(request, "_shortlist_table.html", referral_id=referral_id, **context)


# --- borough -------------------------------------------------------------------------------------

STATUSES = ("open", "awarded", "closed", "withdrawn")


@router.get("/referrals")
async def referrals(request: Request) -> Response:
    person = signed_in(request, "borough")
    listing = await api(request, person).get("referral", "/referrals", limit=200)
    by_status = {s: [r for r in listing["items"] if r["status"] == s] for s in STATUSES}
    return render(request, "referrals.html", title="My referrals", by_status=by_status, flash=take_flash(request))


def _referral_form(request: Request, *, title: str, action: str, values: dict[str, Any], errors: dict[str, str],
                   general: list[str], status_code: int = 200, referral_id: str | None = None) -> Response:
    return render(request, "referral_form.html", status_code=status_code, title=title, action=action, values=values,
                  errors=errors, general=general, referral_id=referral_id,
                  needs=[(c, f"{c} – {NEED_NAMES.get(c, c)}") for c in NEED_CODES],
                  placements=[(p, PLACEMENT_NAMES.get(p, p)) for p in PLACEMENT_TYPES],
                  genders=[(g, g.replace("_", "-").capitalize()) for g in GENDERS],
                  domains=forms.INDICATOR_DOMAINS, indicator_labels=forms.INDICATOR_LABELS)


REFERRAL_FIELDS = {"child_ref", "birth_date", "gender", "primary_need", "secondary_needs", "placement_type",
                   "required_from", "offer_deadline", "outcomes", "preferred_provider_id", "max_travel_km",
                   "location.postcode", "location.lat", "location.lon",
                   *(f"needs_profile.{i}" for i in forms.INDICATOR_LABELS)}


def _referral_field(name: str) -> str:
    """An API field name as the form's: `outcomes.0` -> `outcomes`, `location` -> `location.postcode`."""
    if name == "location":
        return "location.postcode"
    if name == "needs_profile":
        return "needs_profile.physical_health"
    head, _, rest = name.partition(".")
    return head if rest.isdigit() else name


@router.get("/referrals/new")
async def new_referral(request: Request) -> Response:
    signed_in(request, "borough")
    return _referral_form(request, title="Raise a referral", action="/referrals/new", values={"max_travel_km": "30"},
                          errors={}, general=[])


def _api_form_errors(problem: ApiProblem) -> tuple[dict[str, str], list[str]]:
    mapped = ApiProblem(problem.status, problem.title, problem.detail,
                        field=_referral_field(problem.field) if problem.field else None, rule=problem.rule,
                        errors=[{**e, "field": _referral_field(str(e.get("field", "")))} for e in problem.errors])
    return problem_errors(mapped, REFERRAL_FIELDS)


@router.post("/referrals/new")
async def raise_referral(request: Request) -> Response:
    person = signed_in(request, "borough")
    form = await checked_form(request)
    body, errors = forms.referral_body(form)
    general: list[str] = []
    if not errors:
        try:
            created = await api(request, person).post("referral", "/referrals", body)
            return back(f"/referrals/{created['id']}", "Referral raised. Suitable providers are being invited.",
                        request)
        except ApiProblem as problem:
            errors, general = _api_form_errors(problem)
    return _referral_form(request, title="Raise a referral", action="/referrals/new", values=forms.values_of(form),
                          errors=errors, general=general, status_code=422)


@router.get("/referrals/{referral_id}")
async def referral(request: Request, referral_id: str) -> Response:
    person = signed_in(request, "borough")
    client = api(request, person)
    found = await client.get("referral", f"/referrals/{referral_id}")
    context = await _shortlist_context(client, referral_id, person)
    return render(request, "referral.html", title=f"Referral {found.get('child_ref') or referral_id}", referral=found,
                  referral_id=referral_id, flash=take_flash(request), errors={}, general=[], values={},
                  need_names=NEED_NAMES, placement_names=PLACEMENT_NAMES, **context)


@router.get("/referrals/{referral_id}/amend")
async def amend_form(request: Request, referral_id: str) -> Response:
    person = signed_in(request, "borough")
    found = await api(request, person).get("referral", f"/referrals/{referral_id}")
    return _referral_form(request, title="Amend the referral", action=f"/referrals/{referral_id}/amend",
                          values=forms.referral_values(found), errors={}, general=[], referral_id=referral_id)


@router.post("/referrals/{referral_id}/amend")
async def amend(request: Request, referral_id: str) -> Response:
    person = signed_in(request, "borough")
    form = await checked_form(request)
    client = api(request, person)
    before = await client.get("referral", f"/referrals/{referral_id}")
    body, errors = forms.referral_body(form)
    general: list[str] = []
    if not errors:
        changed = forms.changes(before, body)
        if not changed:
            return back(f"/referrals/{referral_id}", "Nothing was changed.", request)
        try:
            await client.post("referral", f"/referrals/{referral_id}/amend", changed)
            return back(f"/referrals/{referral_id}", "Referral amended. Providers are told of the change.", request)
        except ApiProblem as problem:
            errors, general = _api_form_errors(problem)
    return _referral_form(request, title="Amend the referral", action=f"/referrals/{referral_id}/amend",
                          values=forms.values_of(form), errors=errors, general=general, status_code=422,
                          referral_id=referral_id)


@router.post("/referrals/{referral_id}/award")
async def award(request: Request, referral_id: str) -> Response:
    person = signed_in(request, "borough")
    form = await checked_form(request)
    offer_id, justification = forms.text(form, "offer_id"), forms.text(form, "justification")
    client = api(request, person)
    errors: dict[str, str] = {}
    general: list[str] = []
    if not offer_id:
        errors["offer_id"] = "Select the offer to award"
    else:
        try:
            await client.post("referral", f"/referrals/{referral_id}/award",
                              {"offer_id": offer_id, "justification": justification or None})
            return back(f"/referrals/{referral_id}", "Placement awarded. The providers are told the outcome.", request)
        except ApiProblem as problem:
            errors, general = problem_errors(problem, {"offer_id", "justification"}, fallback="justification")
    found = await client.get("referral", f"/referrals/{referral_id}")
    context = await _shortlist_context(client, referral_id, person)
    return render(request, "referral.html", status_code=422, title="Referral", referral=found, referral_id=referral_id,
                  flash=None, errors=errors, general=general,
                  values={"offer_id": offer_id, "justification": justification},
                  need_names=NEED_NAMES, placement_names=PLACEMENT_NAMES, **context)


# --- provider ------------------------------------------------------------------------------------


async def _invitations(client: Api) -> list[dict[str, Any]]:
    listing = await client.get("referral", "/referrals", limit=200)
    return list(listing["items"])


@router.get("/invitations")
async def invitations(request: Request) -> Response:
    person = signed_in(request, "provider")
    items = await _invitations(api(request, person))
    return render(request, "invitations.html", title="Invitations", items=items, flash=take_flash(request),
                  need_names=NEED_NAMES, placement_names=PLACEMENT_NAMES)


@router.get("/fragments/invitations")
async def invitations_fragment(request: Request) -> Response:
    person = signed_in(request, "provider")
    items = await _invitations(api(request, person))
    return render(request, "_invitations_table.html", items=items, need_names=NEED_NAMES,
                  placement_names=PLACEMENT_NAMES)


async def _invitation_page(request: Request, person: Person, referral_id: str, *, status_code: int = 200,
                           errors: dict[str, str] | None = None, general: list[str] | None = None,
                           values: dict[str, Any] | None = None) -> Response:
    client = api(request, person)
    found = await client.get("referral", f"/referrals/{referral_id}")
    shortlist = await client.get("matching", f"/referrals/{referral_id}/shortlist")
    return render(request, "invitation.html", status_code=status_code, title="Invitation", referral=found,
                  referral_id=referral_id, shortlist=shortlist, errors=errors or {}, general=general or [],
                  values=values or {}, flash=take_flash(request), decline_options=DECLINE_OPTIONS,
                  need_names=NEED_NAMES, placement_names=PLACEMENT_NAMES, indicator_labels=forms.INDICATOR_LABELS)


@router.get("/invitations/{referral_id}")
async def invitation(request: Request, referral_id: str) -> Response:
    person = signed_in(request, "provider")
    return await _invitation_page(request, person, referral_id)


@router.post("/invitations/{referral_id}/offer")
async def offer(request: Request, referral_id: str) -> Response:
    person = signed_in(request, "provider")
    form = await checked_form(request)
    errors: dict[str, str] = {}
    fee = forms.pounds_to_pence(form, "weekly_fee", errors, "Weekly fee")
    body = {"weekly_fee_pence": fee, "start_date": forms.text(form, "start_date"),
            "notes": forms.text(form, "notes") or None}
    general: list[str] = []
    if not errors:
        try:
            await api(request, person).post("referral", f"/referrals/{referral_id}/offers", body)
            return back(f"/invitations/{referral_id}", "Offer sent. The borough sees it on its shortlist.", request)
        except ApiProblem as problem:
            renamed = ApiProblem(problem.status, problem.title, problem.detail,
                                 field="weekly_fee" if problem.field == "weekly_fee_pence" else problem.field,
                                 rule=problem.rule, errors=[{**e, "field": "weekly_fee"} if e.get("field") ==
                                                            "weekly_fee_pence" else e for e in problem.errors])
            errors, general = problem_errors(renamed, {"weekly_fee", "start_date", "notes"})
    return await _invitation_page(request, person, referral_id, status_code=422, errors=errors, general=general,
                                  values=forms.values_of(form))


@router.post("/invitations/{referral_id}/decline")
async def decline(request: Request, referral_id: str) -> Response:
    person = signed_in(request, "provider")
    form = await checked_form(request)
    reason = forms.text(form, "reason")
    errors: dict[str, str] = {}
    general: list[str] = []
    if not reason:
        errors["reason"] = "Select why you are declining"
    else:
        try:
            await api(request, person).post("referral", f"/referrals/{referral_id}/decline",
                                            {"reason": reason, "note": forms.text(form, "note") or None})
            return back("/invitations", "Invitation declined. Thank you for saying why.", request)
        except ApiProblem as problem:
            errors, general = problem_errors(problem, {"reason", "note"}, fallback="reason")
    return await _invitation_page(request, person, referral_id, status_code=422, errors=errors, general=general,
                                  values=forms.values_of(form))


@router.get("/offers")
async def my_offers(request: Request) -> Response:
    person = signed_in(request, "provider")
    items = await _invitations(api(request, person))
    offers = [{**o, "referral": r} for r in items for o in r.get("offers", [])]
    return render(request, "offers.html", title="My offers and outcomes", offers=offers, need_names=NEED_NAMES)


# --- auditor -------------------------------------------------------------------------------------


@router.get("/audit")
async def audit(request: Request, referral: str | None = None) -> Response:
    person = signed_in(request, "auditor", "borough")
    if not referral or not referral.strip():
        return render(request, "audit_search.html", title="Evidence packs", errors={}, values={})
    try:
        pack = await api(request, person).get("referral", f"/referrals/{referral.strip()}/audit")
    except ApiProblem as problem:
        errors, general = problem_errors(problem, {"referral"}, fallback="referral")
        if problem.status == 404:
            errors = {"referral": f"No referral {referral.strip()} was found"}
        return render(request, "audit_search.html", status_code=problem.status, title="Evidence packs",
                      errors=errors, general=general, values={"referral": referral})
    return render(request, "audit_pack.html", title=f"Evidence pack {referral.strip()}", pack=pack)


# --- market intelligence ---------------------------------------------------------------------------


async def _intelligence(request: Request, person: Person) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    client = api(request, person)
    insights = await client.get("matching", "/insights")
    providers = None
    if person.role in ("commissioner", "auditor"):
        providers = (await client.get("enrolment", "/providers", status="approved", limit=1000))["items"]
    return insights, providers


async def _figures(request: Request, person: Person) -> dict[str, Any]:
    """Matching's time-to-place distribution and fee quartiles (absent from an older matching: no chart)."""
    client = api(request, person)
    found: dict[str, Any] = {}
    for key, path in (("time_to_place", "/insights/time-to-place"), ("fees", "/insights/fees")):
        try:
            found[key] = await client.get("matching", path)
        except ApiProblem as problem:
            if problem.status not in (404, 405):
                raise
    return found


@router.get("/intelligence")
async def market(request: Request, period: str | None = None) -> Response:
    person = signed_in(request)
    insights, providers = await _intelligence(request, person)
    return render(request, "intelligence.html", title="Market intelligence", scope=insights.get("scope"),
                  charts=intelligence.charts(insights, providers, period, await _figures(request, person)),
                  period=period or "",
                  periods=intelligence.periods(insights), missing=intelligence.MISSING_FIGURES,
                  definition=intelligence.COST_AVOIDANCE_DEFINITION)


@router.get("/intelligence/{chart_id}.csv")
async def chart_csv(request: Request, chart_id: str, period: str | None = None) -> Response:
    person = signed_in(request)
    insights, providers = await _intelligence(request, person)
    for chart in intelligence.charts(insights, providers, period, await _figures(request, person)):
        if chart.id == chart_id:
            return Response(chart.csv(), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{chart_id}-{period or "all"}.csv"'})
    return render(request, "error.html", status_code=404, title="Page not found", message=f"No chart {chart_id}.")


@router.get("/statement")
async def statement(request: Request, period: str | None = None) -> Response:
    person = signed_in(request, "commissioner", "auditor")
    insights, providers = await _intelligence(request, person)
    found = intelligence.position_statement(insights, providers, period)
    return render(request, "statement.html", title=f"Market position statement, {found['period']}", statement=found,
                  period=period or "", periods=intelligence.periods(insights), need_names=NEED_NAMES)


@router.get("/statement.csv")
async def statement_csv(request: Request, period: str | None = None) -> Response:
    person = signed_in(request, "commissioner", "auditor")
    insights, providers = await _intelligence(request, person)
    found = intelligence.position_statement(insights, providers, period)
    chart = intelligence.Chart(id="statement", title="", description="", columns=intelligence.STATEMENT_COLUMNS,
                               rows=intelligence.statement_rows(found))
    return Response(chart.csv(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="market-position-{period or "all"}.csv"'})
