"""Idempotency-Key semantics every service shares (shared/web.py), shown on the referral service."""
from __future__ import annotations

import jwt

from services.referral.app import create_app
from shared.settings import Settings
from shared.testing import auth, service_client
from tests.e2e.support import REFERRAL


async def test_a_retry_gets_the_first_answer_and_a_forged_token_gets_nothing(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    croydon = auth(settings, "borough", "croydon")
    async with service_client(create_app(settings)) as client:
        first = await client.post("/referrals", json=REFERRAL, headers={**croydon, "Idempotency-Key": "k-1"})
        again = await client.post("/referrals", json=REFERRAL, headers={**croydon, "Idempotency-Key": "k-1"})
        assert first.status_code == again.status_code == 201
        assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"

        forged = jwt.encode({"sub": "borough:croydon", "role": "borough", "tenant": "croydon"}, "not-the-secret" * 3)
        stolen = await client.post("/referrals", json=REFERRAL,
                                   headers={"Authorization": f"Bearer {forged}", "Idempotency-Key": "k-1"})
        assert stolen.status_code == 401 and "idempotent-replayed" not in stolen.headers
        assert stolen.headers["content-type"] == "application/problem+json"

        listed = await client.get("/referrals", headers=croydon)
        assert len(listed.json()["items"]) == 1


async def test_a_retry_after_try_again_later_is_run_again(tmp_path) -> None:
    """A 409 with Retry-After is not kept as the key's answer."""
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    croydon = auth(settings, "borough", "croydon")
    async with service_client(create_app(settings)) as client:
        raised = (await client.post("/referrals", json=REFERRAL, headers=croydon)).json()
        provider = auth(settings, "provider", "p-1")
        offer = {"weekly_fee_pence": 425000, "start_date": "2027-09-01"}
        pending = await client.post(f"/referrals/{raised['id']}/offers", json=offer,
                                    headers={**provider, "Idempotency-Key": "o-1"})
        assert pending.status_code == 409 and pending.headers["retry-after"] == "1"
        retried = await client.post(f"/referrals/{raised['id']}/offers", json=offer,
                                    headers={**provider, "Idempotency-Key": "o-1"})
        assert "idempotent-replayed" not in retried.headers and retried.status_code == 409
