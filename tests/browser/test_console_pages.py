"""The console's other forms over HTTP (no browser) against the four services: rejecting an
application, suspending and reinstating, declining an invitation, and what a refusal looks like."""
from __future__ import annotations

import re

import httpx

from shared.auth import mint_token
from tests.browser.stack import Stack, wait_until
from tests.browser.test_console import HILLSIDE, INDICATORS, RIVERSIDE, ok

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Person:
    def __init__(self, stack: Stack, role: str, tenant: str) -> None:
        self.http = httpx.Client(base_url=stack.url("console"), follow_redirects=True, timeout=20)
        page = self.http.get("/dev-sign-in")
        signed = self.http.post("/dev-sign-in", data={"csrf_token": self.csrf(page.text), "role": role,
                                                      "tenant": tenant, "name": f"{role} person"})
        assert signed.status_code == 200 and f"Signed in as <strong>{role} person" in signed.text

    @staticmethod
    def csrf(html: str) -> str:
        match = CSRF.search(html)
        assert match, "no CSRF token on the page"
        return match.group(1)

    def post(self, page: str, action: str, **data: str) -> httpx.Response:
        html = self.http.get(page).text
        return self.http.post(action, data={"csrf_token": self.csrf(html), **data})


def test_reject_suspend_reinstate_and_decline(stack: Stack) -> None:
    enrolment = httpx.Client(base_url=stack.url("enrolment"), timeout=10)
    region = {"Authorization": f"Bearer {mint_token(stack.settings, 'commissioner', 'region')}"}
    applicant = ok(enrolment.post("/providers", json={**RIVERSIDE, "urn": "200001", "name": "Doubtful Ltd"}), 201)["id"]
    school = ok(enrolment.post("/providers", json={**HILLSIDE, "urn": "200002"}), 201)["id"]
    ok(enrolment.post(f"/providers/{school}/inspections", headers=region,
                      json={"framework": "ofsted_legacy", "overall": "good", "inspected_on": "2024-03-01"}))
    ok(enrolment.post(f"/providers/{school}/approve", headers=region))

    commissioner = Person(stack, "commissioner", "region")
    refused = commissioner.post("/applications", f"/providers/{applicant}/reject", reason="")
    assert refused.status_code == 422 and 'id="reason-error"' in refused.text and 'href="#reason"' in refused.text
    assert ok(enrolment.get(f"/providers/{applicant}", headers=region))["status"] == "applied"  # nothing changed
    done = commissioner.post("/applications", f"/providers/{applicant}/reject", reason="Insurance not evidenced")
    assert "Doubtful Ltd rejected." in done.text
    assert ok(enrolment.get(f"/providers/{applicant}", headers=region))["status"] == "rejected"

    page = f"/providers/{school}"
    assert "Suspend Hillside Academy" in commissioner.http.get(page).text
    suspended = commissioner.post(page, f"/providers/{school}/suspend", reason="Safeguarding concern raised")
    assert "Hillside Academy suspended." in suspended.text and "Reinstate Hillside Academy" in suspended.text
    assert "Safeguarding concern raised" in suspended.text  # in the history
    reinstated = commissioner.post(page, f"/providers/{school}/reinstate", reason="")
    assert "Hillside Academy reinstated." in reinstated.text
    assert ok(enrolment.get(page, headers=region))["status"] == "approved"

    borough = httpx.Client(base_url=stack.url("referral"), timeout=10,
                           headers={"Authorization": f"Bearer {mint_token(stack.settings, 'borough', 'sutton')}"})
    referral = ok(borough.post("/referrals", json={
        "child_ref": "CR-2027-0001", "birth_date": "2013-01-02", "gender": "female", "primary_need": "SEMH",
        "secondary_needs": [], "placement_type": "day", "required_from": "2027-09-01",
        "location": {"postcode": "SM1 1EA", "lat": 51.36, "lon": -0.19}, "max_travel_km": 40,
        "needs_profile": INDICATORS, "outcomes": ["Settle in a small class"],
        "offer_deadline": "2027-07-01T17:00:00Z"}), 201)["id"]

    provider = Person(stack, "provider", school)
    invitation = f"/invitations/{referral}"
    wait_until(lambda: provider.http.get(invitation).status_code == 200, message="the invitation to reach the provider")
    page_html = provider.http.get(invitation).text
    assert "CR-2027-0001" not in page_html and "2013-01-02" not in page_html and "SM1 1EA" not in page_html
    unsure = provider.post(invitation, f"{invitation}/decline", reason="")
    assert unsure.status_code == 422 and "Select why you are declining" in unsure.text
    bad_fee = provider.post(invitation, f"{invitation}/offer", weekly_fee="lots", start_date="2027-09-01")
    assert bad_fee.status_code == 422 and 'id="weekly_fee-error"' in bad_fee.text
    declined = provider.post(invitation, f"{invitation}/decline", reason="no_capacity", note="Full until 2028")
    assert "Invitation declined." in declined.text
    view = ok(borough.get(f"/referrals/{referral}"))
    assert view["declines"] == [{"provider_id": school, "reason": "no_capacity", "note": "Full until 2028"}]


def test_a_form_sent_twice_raises_one_referral(stack: Stack) -> None:
    borough = Person(stack, "borough", "merton")
    html = borough.http.get("/referrals/new").text
    form_id = re.search(r'name="form_id" value="([^"]+)"', html)
    assert form_id
    form = {"csrf_token": Person.csrf(html), "form_id": form_id.group(1), "child_ref": "CR-2027-0100",
            "birth_date": "2012-03-04", "gender": "male", "primary_need": "SLCN", "placement_type": "day",
            "required_from": "2027-09-01", "offer_deadline": "2027-07-01", "outcomes": "Speak in class",
            **{f"needs_profile.{k}": str(v) for k, v in INDICATORS.items()}}
    first = borough.http.post("/referrals/new", data=form)
    again = borough.http.post("/referrals/new", data=form)  # a double click, or the browser retrying
    assert first.status_code == again.status_code == 200
    assert first.url == again.url and "/referrals/" in str(first.url)
    listing = ok(httpx.get(stack.url("referral") + "/referrals", headers={
        "Authorization": f"Bearer {mint_token(stack.settings, 'borough', 'merton')}"}))
    assert [r["child_ref"] for r in listing["items"]] == ["CR-2027-0100"]
