"""Referral on real PostgreSQL and real Kafka.

`referral-raised` and `offer-submitted` appear on `placematch.referral`; an invitation arriving
on `placematch.matching` is what enables the provider's offer (before it: 409 + Retry-After).
"""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.referral.app import create_app
from shared.events import Envelope
from shared.settings import Settings
from shared.testing import auth, service_client
from tests.helpers import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

PROVIDER = "0d1f6c9e-6f0a-4f1e-8a55-0f1d9b7e2a01"


def referral_body() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "child_ref": "CR-2026-0042", "birth_date": "2014-05-02", "gender": "male",
        "primary_need": "ASD", "secondary_needs": ["SLCN"], "placement_type": "day",
        "required_from": (now + timedelta(days=90)).date().isoformat(),
        "location": {"postcode": "CR0 1NX", "lat": 51.372, "lon": -0.099}, "max_travel_km": 30,
        "offer_deadline": (now + timedelta(days=30)).strftime("%Y-%m-%dT17:00:00Z"),
        "preferred_provider_id": None,
        "needs_profile": {
            "physical_health": 0, "emotional_health": 2, "relationships": 1, "risk_taking": 0,
            "learning_disability": 2, "educational_progress": 2, "self_regulation": 3,
            "community_engagement": 1, "self_care": 1, "goals_and_aspirations": 1, "voice": 2, "identity": 1,
        },
        "outcomes": ["Attend school full time by spring term"],
    }


async def read_types(consumer: AIOKafkaConsumer, wanted: list[str], timeout: float = 60.0) -> list[Envelope]:
    """Envelopes from the topic until every type in `wanted` has been seen."""
    envelopes: list[Envelope] = []
    async with asyncio.timeout(timeout):
        while not set(wanted) <= {e.type for e in envelopes}:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                envelopes += [Envelope.from_kafka(r.value, dict(r.headers)) for r in records]
    return envelopes


async def test_invitation_on_matching_enables_an_offer_and_both_events_reach_kafka(
    kafka_bootstrap: str, fresh_database_url: str, kafka_topic_prefix: str, tmp_path: Path
) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=fresh_database_url,
                        topic_prefix=kafka_topic_prefix, data_dir=tmp_path, relay_poll_seconds=0.05)
    app = create_app(settings)
    borough = auth(settings, "borough", "croydon")
    provider = auth(settings, "provider", PROVIDER)

    async with service_client(app) as client:
        await app.state.runtime.consumers_ready(timeout=60)
        assert app.state.runtime.db.dialect == "postgresql"

        response = await client.post("/referrals", json=referral_body(), headers=borough)
        assert response.status_code == 201, response.text
        rid = response.json()["id"]
        offer = {"weekly_fee_pence": 425000, "start_date": referral_body()["required_from"], "notes": "ASD unit"}

        early = await client.post(f"/referrals/{rid}/offers", json=offer, headers=provider)
        assert early.status_code == 409 and int(early.headers["Retry-After"]) > 0

        invitation = Envelope(
            type="referral-matched", subject=rid, source="placematch/matching",
            data={"referral_id": rid, "borough": "croydon", "invited": [PROVIDER], "newly_invited": [PROVIDER],
                  "results": [{"provider_id": PROVIDER, "eligible": True, "rules": {}}],
                  "trigger": "referral-raised"},
        ).to_kafka()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            key = invitation.key.encode() if isinstance(invitation.key, str) else invitation.key
            await producer.send_and_wait(settings.topic("matching"), invitation.value, key=key,
                                         headers=[(k, v) for k, v in invitation.headers.items()])
        finally:
            await producer.stop()

        async def offered() -> Any:
            response = await client.post(f"/referrals/{rid}/offers", json=offer, headers=provider)
            assert response.status_code != 409 or response.json()["rule"] == "invitation_pending", response.text
            return response if response.status_code == 201 else None

        accepted = await wait_for(offered, timeout=60, interval=0.5, message="the invitation to enable the offer")
        offer_id = accepted.json()["id"]

        consumer = AIOKafkaConsumer(settings.topic("referral"), bootstrap_servers=kafka_bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            envelopes = await read_types(consumer, ["referral-raised", "offer-submitted"])
        finally:
            await consumer.stop()

    assert [e.type for e in envelopes] == ["referral-raised", "offer-submitted"]
    raised, submitted = envelopes
    assert {e.subject for e in envelopes} == {rid} and {e.source for e in envelopes} == {"placematch/referral"}
    assert [e.sequence for e in envelopes] == [1, 2]
    assert raised.data["borough"] == "croydon" and raised.data["location"]["district"] == "CR0"
    assert submitted.data["offer_id"] == offer_id and submitted.data["provider_id"] == PROVIDER
    assert submitted.data["weekly_fee_pence"] == 425000 and submitted.actor == f"provider:{PROVIDER}"
