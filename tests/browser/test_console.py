"""The console in a real browser (Debian's Chromium driven by Playwright) against the four services.

A borough raises a referral in the form; a provider signs in, sees the invitation arrive and
offers; the commissioner watches the shortlist update without reloading; the borough awards
another than the top-ranked offer, is asked for a justification, gives one; the auditor reads it
in the evidence pack. Every page is screenshotted into tests/browser/artifacts/ and checked with
axe-core: no serious or critical accessibility violation.
"""
from __future__ import annotations

import csv
import io
import time
from typing import Any

import httpx
import pytest

from shared.auth import mint_token
from tests.browser.conftest import ARTIFACTS, VENDOR
from tests.browser.stack import Stack, wait_until

pytestmark = pytest.mark.browser

INDICATORS = {"physical_health": 0, "emotional_health": 2, "relationships": 1, "risk_taking": 0,
              "learning_disability": 2, "educational_progress": 2, "self_regulation": 3,
              "community_engagement": 1, "self_care": 1, "goals_and_aspirations": 1, "voice": 2, "identity": 1}
PROVIDER = {"kind": "independent_special_school", "lots": ["ASD", "SEMH"], "age_min": 5, "age_max": 19,
            "genders": ["female", "male"], "placement_types": ["day", "residential_38"], "capacity": 4,
            "boroughs_served": []}
RIVERSIDE = {**PROVIDER, "name": "Riverside School", "urn": "100001", "contact_email": "admissions@riverside.example",
             "location": {"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115}}
HILLSIDE = {**PROVIDER, "name": "Hillside Academy", "urn": "100002", "contact_email": "office@hillside.example",
            "location": {"postcode": "SE25 6XX", "lat": 51.397, "lon": -0.075}}
TIMEOUT = 20_000
"""Milliseconds a page may take to show what an event changed (matching and the relays are asynchronous)."""

checked: list[str] = []
STARTED = time.monotonic()


def bearer(stack: Stack, role: str, tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(stack.settings, role, tenant)}"}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url}: {response.status_code} {response.text}"
    return response.json()


def look(page: Any, name: str) -> None:
    """Screenshot the page, then run axe-core on it: no serious or critical violation."""
    print(f"{time.monotonic() - STARTED:6.1f} s  {name}")
    header = page.evaluate("() => getComputedStyle(document.querySelector('.govuk-header')).backgroundColor")
    assert header == "rgb(11, 12, 12)", f"{name}: the GOV.UK Frontend stylesheet did not load"
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.add_script_tag(path=str(VENDOR / "axe" / "axe.min.js"))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
           if v["impact"] in ("serious", "critical")]
    assert not bad, f"{name}: accessibility violations {bad}"
    checked.append(name)


def sign_in(context: Any, stack: Stack, role: str, tenant: str, name: str) -> Any:
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(stack.url("console") + "/")
    assert page.url.endswith("/sign-in")
    page.get_by_role("link", name="Use the development sign-in").click()
    page.get_by_label({"commissioner": "Commissioner", "borough": "Borough officer", "provider": "Provider",
                       "auditor": "Auditor"}[role], exact=True).check()
    page.get_by_label("Borough code or provider id").fill(tenant)
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {name}").wait_for()
    return page


def test_referral_to_award_in_the_browser(stack: Stack, browser: Any) -> None:
    from playwright.sync_api import expect

    looked_before = len(checked)
    enrolment = httpx.Client(base_url=stack.url("enrolment"), timeout=10)
    commissioner_api = bearer(stack, "commissioner", "region")
    riverside = ok(enrolment.post("/providers", json=RIVERSIDE), 201)["id"]
    hillside = ok(enrolment.post("/providers", json=HILLSIDE), 201)["id"]
    ok(enrolment.post(f"/providers/{riverside}/inspections", headers=commissioner_api,
                      json={"framework": "ofsted_legacy", "overall": "good", "inspected_on": "2024-03-01"}))
    ok(enrolment.post(f"/providers/{hillside}/inspections", headers=commissioner_api,
                      json={"framework": "ofsted_legacy", "overall": "outstanding", "inspected_on": "2024-05-01"}))

    # the commissioner decides the applications in the console
    commissioner = sign_in(browser.new_context(), stack, "commissioner", "region", "Carol Commissioner")
    expect(commissioner.get_by_role("heading", name="Applications to decide")).to_be_visible()
    look(commissioner, "01-commissioner-applications")
    commissioner.get_by_role("button", name="Approve Riverside School").click()
    expect(commissioner.get_by_text("Riverside School approved.")).to_be_visible()
    commissioner.get_by_role("button", name="Approve Hillside Academy").click()
    expect(commissioner.get_by_text("No application is waiting for a decision.")).to_be_visible()
    commissioner.get_by_role("link", name="Providers", exact=True).click()
    commissioner.get_by_role("link", name="Riverside School").click()
    expect(commissioner.get_by_text("How the quality score was worked out")).to_be_visible()
    expect(commissioner.locator("dd", has_text="80.00").first).to_be_visible()
    look(commissioner, "02-commissioner-provider")

    # the borough raises a referral in the form; a first try without the needs profile is refused
    borough = sign_in(browser.new_context(), stack, "borough", "croydon", "Bola Borough")
    borough.get_by_role("link", name="Raise a referral").first.click()
    borough.get_by_label("Case reference").fill("CR-2026-0042")
    borough.get_by_label("Date of birth").fill("2014-05-02")
    borough.get_by_label("Male", exact=True).check()
    borough.get_by_label("Primary need").select_option("ASD")
    borough.get_by_label("Type of placement").select_option("day")
    borough.get_by_label("Required from").fill("2027-09-01")
    borough.get_by_label("Postcode of the child's home").fill("CR0 1NX")
    borough.get_by_label("Latitude (optional)").fill("51.372")
    borough.get_by_label("Longitude (optional)").fill("-0.099")
    borough.get_by_label("Outcomes wanted").fill("Attend school full time by spring term\nUse a communication aid")
    borough.get_by_label("Offers close on").fill("2027-07-01")
    borough.get_by_role("button", name="Raise the referral").click()
    summary = borough.locator(".govuk-error-summary")
    expect(summary).to_contain_text("Select a rating for physical health")
    look(borough, "03-borough-referral-errors")
    for indicator, score in INDICATORS.items():
        base = f"needs_profile-{indicator}"
        borough.locator(f"#{base}" if score == 0 else f"#{base}-{score + 1}").check()
    borough.get_by_label("Date of birth").fill("2031-01-01")  # after the start: the API refuses it
    borough.get_by_role("button", name="Raise the referral").click()
    expect(borough.locator("#birth_date-error")).to_be_visible()
    expect(summary.locator("a[href='#birth_date']")).to_be_visible()
    borough.get_by_label("Date of birth").fill("2014-05-02")
    borough.get_by_role("button", name="Raise the referral").click()
    expect(borough.get_by_text("Referral raised.")).to_be_visible()
    referral_id = borough.locator("#referral-id").inner_text().strip()
    look(borough, "04-borough-referral")
    borough.get_by_role("link", name="Amend the referral").click()
    expect(borough.get_by_label("Case reference")).to_have_value("CR-2026-0042")
    expect(borough.locator("#needs_profile-self_regulation-4")).to_be_checked()
    borough.get_by_label("Furthest the child can travel, in km").fill("35")
    borough.get_by_role("button", name="Save the changes").click()
    expect(borough.get_by_text("Referral amended.")).to_be_visible()

    # the commissioner watches the shortlist: it must update without a reload
    commissioner.goto(stack.url("console") + f"/shortlists/{referral_id}")
    expect(commissioner.locator("#shortlist-table")).to_contain_text("No offers yet")
    commissioner.evaluate("() => { window.notReloaded = true; }")

    # the provider sees the invitation arrive (live list) and offers
    provider = sign_in(browser.new_context(), stack, "provider", riverside, "Priya Provider")
    invitation = provider.locator("#invitations-table a").first
    expect(invitation).to_be_visible()
    expect(provider.locator("#invitations-table")).not_to_contain_text("CR-2026-0042")
    look(provider, "05-provider-invitations")
    invitation.click()
    expect(provider.get_by_text("details redacted until award")).to_be_visible()
    look(provider, "06-provider-invitation")
    provider.get_by_label("Weekly fee").fill("4,250")
    provider.get_by_label("Start date").fill("2027-09-01")
    provider.get_by_label("Notes for the borough (optional)").fill("Place in our ASD unit")
    provider.get_by_role("button", name="Send the offer").click()
    expect(provider.get_by_text("Offer sent.")).to_be_visible()

    table = commissioner.locator("#shortlist-table tbody tr[data-offer]")
    expect(table).to_have_count(1)
    expect(table.first).to_contain_text("Riverside School")
    expect(table.first).to_contain_text("£4,250")

    # a rival offers less through the API: it tops the shortlist, which updates again
    referral_api = httpx.Client(base_url=stack.url("referral"), timeout=10)
    ok(referral_api.post(f"/referrals/{referral_id}/offers", headers=bearer(stack, "provider", hillside),
                         json={"weekly_fee_pence": 390000, "start_date": "2027-09-01", "notes": None}), 201)
    expect(table).to_have_count(2)
    expect(table.first).to_contain_text("Hillside Academy")
    assert commissioner.evaluate("() => window.notReloaded") is True
    look(commissioner, "07-commissioner-shortlist")

    # the borough awards Riverside, not the top: a justification is asked for, then recorded
    borough.reload()
    expect(borough.locator("#shortlist-table tbody tr[data-offer]")).to_have_count(2)
    borough.get_by_label("Riverside School", exact=False).check()
    borough.get_by_role("button", name="Award").click()
    expect(borough.locator("#justification-error")).to_be_visible()
    expect(borough.locator(".govuk-error-summary a[href='#justification']")).to_be_visible()
    look(borough, "08-borough-award-needs-justification")
    borough.get_by_label("Justification (when not the top-ranked offer)").fill(
        "Parental preference; tribunal order of 2027-06-12")
    borough.get_by_role("button", name="Award").click()
    expect(borough.get_by_role("heading", name="Placement awarded")).to_be_visible()
    look(borough, "09-borough-awarded")

    provider.goto(stack.url("console") + "/offers")
    expect(provider.locator("table")).to_contain_text("Awarded")
    look(provider, "10-provider-offers")

    # the award opens a placement: the borough sees it on "my placements", then opens it
    def placement_listed() -> bool:
        borough.goto(stack.url("console") + "/placements")
        return borough.locator("table a[href^='/placements/']").count() == 1
    wait_until(placement_listed, timeout=30, message="the placement on my placements")
    look(borough, "10a-borough-placements")
    borough.locator("table a[href^='/placements/']").click()
    expect(borough.get_by_role("heading", level=1)).to_contain_text("Placement")
    expect(borough.locator(".govuk-summary-list")).to_contain_text("croydon")
    expect(borough.locator(".govuk-summary-list")).to_contain_text("Awarded")
    look(borough, "10b-borough-placement")

    auditor = sign_in(browser.new_context(), stack, "auditor", "region", "Ade Auditor")
    auditor.get_by_label("Referral id").fill(referral_id)
    auditor.get_by_role("button", name="Show the evidence pack").click()
    expect(auditor.locator(".govuk-inset-text")).to_contain_text("Parental preference; tribunal order of 2027-06-12")
    look(auditor, "11-auditor-evidence-pack")

    # market intelligence: charts drawn on the server, each with its table and CSV
    commissioner.goto(stack.url("console") + "/intelligence")
    expect(commissioner.locator("svg.pm-chart").first).to_be_visible()
    look(commissioner, "12-commissioner-intelligence")
    answer = commissioner.request.get(stack.url("console") + "/intelligence/referrals.csv")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(answer.text())))
    assert rows[0] == ["need", "month", "referrals raised", "awarded", "closed unfilled"]
    assert [r[0] for r in rows[1:]] == ["ASD"] and rows[1][2:4] == ["1", "1"]
    commissioner.goto(stack.url("console") + "/statement")
    expect(commissioner.get_by_role("heading", name="Demand, gaps and prices: all time")).to_be_visible()
    look(commissioner, "13-commissioner-statement")
    commissioner.goto(stack.url("console") + "/policy")
    commissioner.get_by_label("Referral id").fill(referral_id)
    commissioner.locator("form[method=get] #quality_weight").fill("0.20")
    commissioner.locator("form[method=get] #price_weight").fill("0.80")
    commissioner.get_by_role("button", name="Preview").click()
    expect(commissioner.get_by_text("With these weights")).to_be_visible()
    look(commissioner, "14-commissioner-policy")
    commissioner.get_by_label("New quality weight").fill("0.50")
    commissioner.get_by_label("New price weight").fill("0.60")
    commissioner.get_by_role("button", name="Put the new policy in force").click()
    expect(commissioner.locator(".govuk-error-summary")).to_contain_text("1.00")
    expect(commissioner.locator(".govuk-form-group--error input")).to_have_count(1)
    commissioner.get_by_label("New price weight").fill("0.50")
    commissioner.get_by_role("button", name="Put the new policy in force").click()
    expect(commissioner.get_by_text("Ranking policy version 2 is in force")).to_be_visible()

    provider.goto(stack.url("console") + "/intelligence")
    expect(provider.get_by_role("heading", name="Market intelligence")).to_be_visible()
    expect(provider.locator("#cost-avoidance-heading")).to_have_count(0)
    look(provider, "15-provider-market")
    assert len(checked) - looked_before == 17


def test_a_form_without_the_session_csrf_token_is_refused(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url("console")) as client:
        page = client.get("/dev-sign-in")
        assert page.status_code == 200
        cookie = page.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
        refused = client.post("/dev-sign-in", data={"csrf_token": "forged" * 8, "role": "borough", "tenant": "croydon"})
        assert refused.status_code == 403
        assert client.get("/referrals").status_code == 303  # still not signed in
