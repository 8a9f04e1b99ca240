"""`placematch up` as a user runs it: the README's tour over HTTP, then a restart keeps the state."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.e2e.support import REFERRAL, RIVERSIDE, Stack, bearer, ok
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


async def test_readme_tour_then_restart_keeps_state(stack: Stack) -> None:
    commissioner, croydon = bearer("commissioner", "region"), bearer("borough", "croydon")
    await stack.start()
    async with httpx.AsyncClient(timeout=10) as http:
        enrolment, referral, matching = stack.url("enrolment"), stack.url("referral"), stack.url("matching")
        # 0. the console beside the services, with the development sign-in `up` switches on
        console = stack.url("console")
        assert ok(await http.get(f"{console}/health")) == {"status": "ok", "service": "console"}
        page = await http.get(f"{console}/dev-sign-in")
        assert page.status_code == 200 and "switched off" not in page.text and "croydon" in page.text
        # 1. apply, inspect, approve
        provider_id = ok(await http.post(f"{enrolment}/providers", json=RIVERSIDE), 201)["id"]
        ok(await http.post(f"{enrolment}/providers/{provider_id}/inspections", headers=commissioner,
                           json={"framework": "ofsted_legacy", "overall": "good", "inspected_on": "2024-03-01"}))
        approved = ok(await http.post(f"{enrolment}/providers/{provider_id}/approve", headers=commissioner))
        assert approved["status"] == "approved"
        # 2. raise a referral; matching invites the school
        referral_id = ok(await http.post(f"{referral}/referrals", headers=croydon, json=REFERRAL), 201)["id"]

        async def invited() -> bool:
            body = ok(await http.get(f"{matching}/referrals/{referral_id}/eligible-providers", headers=croydon))
            return provider_id in [p["provider_id"] for p in body["providers"]]
        await wait_for(invited, timeout=30, message="the school to be invited")

        def invitation_mailed() -> bool:  # `placematch up` keeps email in <data-dir>/mail
            return any("admissions@riverside.example" in p.read_text(errors="replace")
                       for p in (stack.data_dir / "mail").glob("*.eml"))
        await wait_for(invitation_mailed, timeout=30, message="the invitation email")
        # 3. the school sees a redacted referral and offers (409 + Retry-After until the invitation lands)
        school = bearer("provider", provider_id)
        seen = ok(await http.get(f"{referral}/referrals/{referral_id}", headers=school))
        assert "child_ref" not in seen and "birth_date" not in seen

        async def offer() -> dict[str, Any] | None:
            response = await http.post(f"{referral}/referrals/{referral_id}/offers", headers=school,
                                       json={"weekly_fee_pence": 425000, "start_date": "2027-09-01",
                                             "notes": "ASD unit"})
            if response.status_code == 409:
                assert "retry-after" in response.headers
                return None
            return ok(response, 201)
        offer_id = (await wait_for(offer, timeout=30, message="the offer to be accepted"))["id"]
        # 4. the shortlist, then the award of the top offer (no justification needed)

        async def shortlisted() -> dict[str, Any] | None:
            body = ok(await http.get(f"{matching}/referrals/{referral_id}/shortlist", headers=croydon))
            return body if body["entries"] else None
        shortlist = await wait_for(shortlisted, timeout=30, message="a shortlist")
        assert shortlist["entries"][0] | {} == shortlist["entries"][0]
        assert shortlist["entries"][0]["offer_id"] == offer_id
        assert shortlist["entries"][0]["quality"] == "80.00" and shortlist["entries"][0]["price"] == "100.00"
        assert shortlist["entries"][0]["score"] == "88.00"

        async def awarded() -> dict[str, Any] | None:
            response = await http.post(f"{referral}/referrals/{referral_id}/award", headers=croydon,
                                       json={"offer_id": offer_id})
            if response.status_code == 422 and "justification" in response.text:
                return None  # the shortlist has not reached the referral service yet
            return ok(response)
        await wait_for(awarded, timeout=30, message="the award")
        before = ok(await http.get(f"{referral}/referrals/{referral_id}", headers=croydon))
        assert before["status"] == "awarded"

    stack.stop()
    await stack.start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            after = ok(await http.get(f"{stack.url('referral')}/referrals/{referral_id}", headers=croydon))
            assert after == before
            provider = ok(await http.get(f"{stack.url('enrolment')}/providers/{provider_id}", headers=commissioner))
            assert provider["status"] == "approved" and provider["quality_score"] == "80.00"
            shortlist_after = ok(await http.get(f"{stack.url('matching')}/referrals/{referral_id}/shortlist",
                                                headers=croydon))
            assert shortlist_after["entries"] == shortlist["entries"]
            # 5. the award opened a placement (kept across the restart); the school starts it
            placement = stack.url("placement")
            school = bearer("provider", provider_id)

            async def opened() -> dict[str, Any] | None:
                found = ok(await http.get(f"{placement}/placements", headers=croydon,
                                          params={"referral_id": referral_id}))
                return found["placements"][0] if found["placements"] else None
            opening = await wait_for(opened, timeout=30, message="the placement the award opens")
            assert opening["status"] == "awarded" and opening["provider_id"] == provider_id
            assert opening["weekly_fee_pence"] == 425000 and opening["offer_id"] == offer_id
            today = datetime.now(UTC).date().isoformat()
            started = ok(await http.post(f"{placement}/placements/{opening['id']}/start", headers=school,
                                         json={"started_on": today}))
            assert started["status"] == "active" and started["started_on"] == today
    finally:
        stack.stop()
    assert (stack.data_dir / "referral.db").exists() and (stack.data_dir / "bus.db").exists()
