"""The placement pages over real HTTP (the console and the placement service of the test stack):
a borough records a review with the 12 indicators, a provider asks for a fee uplift, the borough
agrees it in part; the commissioner reads spend. Forms go through the dev sign-in and CSRF as a
browser's would."""
from __future__ import annotations

import contextlib
import re
import uuid
from typing import Any

import httpx

from shared.auth import mint_token
from shared.vocabulary import NEEDS_INDICATORS
from tests.browser.stack import Stack


def bearer(stack: Stack, role: str, tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(stack.settings, role, tenant)}"}


def signed_in(stack: Stack, role: str, tenant: str) -> contextlib.closing[httpx.Client]:
    client = httpx.Client(base_url=stack.url("console"))
    form = client.get("/dev-sign-in")
    answer = client.post("/dev-sign-in", data={**hidden(form.text), "role": role, "tenant": tenant, "name": role})
    assert answer.status_code == 303, answer.text
    return contextlib.closing(client)


def hidden(html: str, action: str | None = None) -> dict[str, str]:
    """The CSRF token and form id of the (first, or `action`'s) form on a page."""
    if action is not None:
        html = html[html.index(f'action="{action}"'):]
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    form_id = re.search(r'name="form_id" value="([^"]+)"', html)
    assert token and form_id, html[:500]
    return {"csrf_token": token.group(1), "form_id": form_id.group(1)}


def test_review_fee_uplift_and_spend_through_the_console(stack: Stack) -> None:
    provider_id = str(uuid.uuid4())
    placement_api = stack.url("placement")
    croydon = bearer(stack, "borough", "croydon")
    with httpx.Client(base_url=placement_api) as api:
        opened = api.post("/placements", headers=croydon, json={
            "provider_id": provider_id, "provider_name": "St Anne's School", "weekly_fee_pence": 510000,
            "planned_start": "2026-09-01", "primary_need": "SEMH", "placement_type": "day",
            "outcomes": ["Attend school full time"], "needs_profile": dict.fromkeys(NEEDS_INDICATORS, 2),
            "reason": "tribunal_named", "note": "Tribunal order of 2026-06-12"})
        assert opened.status_code == 201, opened.text
        pid = opened.json()["id"]
        started = api.post(f"/placements/{pid}/start", headers=croydon, json={"started_on": "2026-09-01"})
        assert started.status_code == 200, started.text

        def view() -> dict[str, Any]:
            found: dict[str, Any] = api.get(f"/placements/{pid}", headers=croydon).json()
            return found

        with signed_in(stack, "borough", "croydon") as borough:
            listed = borough.get("/placements")
            assert listed.status_code == 200 and f"/placements/{pid}" in listed.text
            page = borough.get(f"/placements/{pid}")
            assert "Record a review" in page.text and "St Anne&#39;s School" in page.text
            review = {**hidden(page.text, f"/placements/{pid}/review"), "reviewed_on": "2026-11-20",
                      "outcome": "Attend school full time", "progress.0": "progressing", "continues": "yes",
                      "next_review_due": "2027-05-20",
                      **{f"needs_profile.{i}": "1" for i in NEEDS_INDICATORS}}
            # one indicator left unrated: the form says which, and nothing is recorded
            missing = {k: v for k, v in review.items() if k != f"needs_profile.{NEEDS_INDICATORS[0]}"}
            refused = borough.post(f"/placements/{pid}/review", data=missing)
            assert refused.status_code == 422 and "Select a rating for" in refused.text
            assert view()["reviews"] == []
            recorded = borough.post(f"/placements/{pid}/review", data={**review, **hidden(refused.text,
                                                                                        f"/placements/{pid}/review")})
            assert recorded.status_code == 303, recorded.text
            after = view()
            assert len(after["reviews"]) == 1 and after["review_due"] == "2027-05-20"
            assert after["outcomes"][0]["progress"] == "progressing"

        with signed_in(stack, "provider", provider_id) as provider:
            page = provider.get(f"/placements/{pid}")
            assert page.status_code == 200 and "Request a fee uplift" in page.text
            assert "Record a review" not in page.text
            asked = provider.post(f"/placements/{pid}/fee-change", data={
                **hidden(page.text, f"/placements/{pid}/fee-change"), "weekly_fee": "5,400.00",
                "effective_from": "2027-04-01", "reason": "Staff costs rose"})
            assert asked.status_code == 303, asked.text
        change = view()["fee_changes"][0]
        assert change["requested_weekly_fee_pence"] == 540000 and change["status"] == "requested"
        with httpx.Client(base_url=stack.url("console")) as stranger:  # signed out: to the sign-in page
            assert stranger.get(f"/placements/{pid}").status_code == 303

        with signed_in(stack, "borough", "croydon") as borough:
            page = borough.get(f"/placements/{pid}")
            action = f"/placements/{pid}/fee-changes/{change['change_id']}/decision"
            form = {**hidden(page.text, action), "decision": "agreed_in_part", "agreed_fee": "5200"}
            unexplained = borough.post(action, data=form)  # in part needs a reason: asked for by the note field
            assert unexplained.status_code == 422 and 'id="decision_note-error"' in unexplained.text
            assert view()["fee_changes"][0]["status"] == "requested"
            decided = borough.post(action, data={**form, **hidden(unexplained.text, action),
                                                 "decision_note": "Inflation at 2%, not 6%"})
            assert decided.status_code == 303, decided.text
        assert view()["fee_changes"][0]["status"] == "agreed_in_part"

    with signed_in(stack, "commissioner", "region") as commissioner:
        spend = commissioner.get("/spend", params={"first": "2026-09-01", "last": "2026-09-30"})
        assert spend.status_code == 200 and "Spend by provider: the top ten" in spend.text
        assert provider_id in spend.text and "100.0%" in spend.text
        rows = commissioner.get("/spend/spend-boroughs.csv", params={"first": "2026-09-01", "last": "2026-09-30"})
        assert rows.status_code == 200 and rows.text.splitlines()[1].startswith("croydon,")
        bad = commissioner.get("/spend", params={"first": "2026-09-30", "last": "2026-09-01"})
        assert bad.status_code == 422 and "govuk-error-summary" in bad.text
        with signed_in(stack, "borough", "croydon") as borough:
            assert borough.get("/spend").status_code == 403
