"""`placematch up` as operations see it: each service's /metrics on its own port, the invitation
email counted, and `placematch dlq list` over the running stack's local bus."""
from __future__ import annotations

import json

import httpx
import pytest

from services import SERVICES
from tests.e2e.support import REFERRAL, RIVERSIDE, Stack, bearer, cli, ok
from tests.helpers import wait_for
from tests.ops_stack import sample

pytestmark = pytest.mark.e2e


async def test_every_port_serves_its_service_metrics(stack: Stack) -> None:
    commissioner, croydon = bearer("commissioner", "region"), bearer("borough", "croydon")
    await stack.start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            enrolment, referral = stack.url("enrolment"), stack.url("referral")
            provider_id = ok(await http.post(f"{enrolment}/providers", json=RIVERSIDE), 201)["id"]
            ok(await http.post(f"{enrolment}/providers/{provider_id}/inspections", headers=commissioner,
                               json={"framework": "ofsted_legacy", "overall": "good", "inspected_on": "2024-03-01"}))
            ok(await http.post(f"{enrolment}/providers/{provider_id}/approve", headers=commissioner))
            referral_id = ok(await http.post(f"{referral}/referrals", headers=croydon, json=REFERRAL), 201)["id"]

            async def page(service: str) -> str:
                response = await http.get(f"{stack.url(service)}/metrics")
                assert response.status_code == 200
                return response.text

            async def email_sent() -> bool:
                return (sample(await page("notification"), "placematch_emails_total", outcome="sent") or 0) >= 1

            await wait_for(email_sent, timeout=60, interval=0.2, message="the invitation email counted")
            pages = {service: await page(service) for service in SERVICES}
        assert sample(pages["enrolment"], "placematch_http_requests_total", method="POST", route="/providers",
                      status="201") == 1
        assert sample(pages["referral"], "placematch_http_requests_total", method="POST", route="/referrals",
                      status="201") == 1
        assert sample(pages["enrolment"], "placematch_http_requests_total", route="/referrals") is None
        # at least once: matching may match the referral again when the provider's approval reaches it after
        # the referral (two topics), and a transaction retried after a conflict counts its appends again
        assert (sample(pages["matching"], "placematch_events_appended_total", type="referral-matched") or 0) >= 1
        for text in pages.values():
            assert referral_id not in text and provider_id not in text
        listed = cli("dlq", "list", "--data-dir", str(stack.data_dir), "--json")
        assert listed.returncode == 0 and [json.loads(line) for line in listed.stdout.splitlines()] == []
    finally:
        stack.stop()
