"""Matching on real Kafka and real PostgreSQL: approved providers and a raised referral yield
`referral-matched`, notification requests and audit records; offers yield `shortlist-ranked`."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from services.matching.app import create_app
from shared.bus import Message
from shared.events import Envelope
from shared.settings import Settings
from shared.testing import auth, service_client
from tests.helpers import wait_for
from tests.unit.matching.test_api import PROFILE, REFERRAL

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


class TopicReader:
    """Collects every event of some topics from the beginning."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                         group_id=f"reader-{uuid.uuid4().hex[:8]}", metadata_max_age_ms=1000)
        self.events: dict[str, list[Envelope]] = {t: [] for t in topics}

    async def poll(self) -> None:
        batches = await self.consumer.getmany(timeout_ms=200)
        for tp, records in batches.items():
            for r in records:
                self.events[tp.topic].append(Envelope.from_kafka(r.value, dict(r.headers)))


async def test_matching_on_kafka_and_postgres(kafka_bootstrap: str, fresh_database_url: str,
                                              kafka_topic_prefix: str, tmp_path: Any) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=fresh_database_url,
                        topic_prefix=kafka_topic_prefix, data_dir=tmp_path, relay_poll_seconds=0.1,
                        kafka_partitions=1)
    app = create_app(settings)
    p1, p2 = str(uuid.uuid4()), str(uuid.uuid4())
    rid = str(uuid.uuid4())
    t = settings.topic
    async with service_client(app) as client:
        runtime = app.state.runtime
        await runtime.consumers_ready(60)
        reader = TopicReader(kafka_bootstrap, [t("matching"), t("notifications"), t("audit")])
        await reader.consumer.start()
        try:
            def msg(topic: str, type_: str, subject: str, data: dict[str, Any]) -> Message:
                e = Envelope(type=type_, subject=subject, data=data, source=f"placematch/{topic}")
                return Message(t(topic), subject, e.to_json())

            await runtime.bus.publish([
                msg("enrolment", "provider-approved", p1, {**PROFILE, "quality_score": "80.00"}),
                msg("enrolment", "provider-approved", p2, {**PROFILE, "quality_score": "90.00"}),
            ])
            await runtime.bus.publish([msg("referral", "referral-raised", rid, REFERRAL)])

            async def matched_all() -> bool:
                await reader.poll()
                invited = {p for e in reader.events[t("matching")] if e.type == "referral-matched"
                           for p in e.data["newly_invited"]}
                notes = {e.data["recipient"]["tenant"] for e in reader.events[t("notifications")]
                         if e.data["webhook_type"] == "referral.invited"}
                decisions = [e for e in reader.events[t("audit")] if e.data["decision"] == "referral-matched"]
                return invited == {p1, p2} and notes == {p1, p2} and bool(decisions)
            await wait_for(matched_all, timeout=60)

            matched = [e for e in reader.events[t("matching")] if e.type == "referral-matched"]
            assert all(e.subject == rid and e.source == "placematch/matching" for e in matched)
            audit = [e for e in reader.events[t("audit")] if e.data["decision"] == "referral-matched"]
            assert {a.data["event_id"] for a in audit} <= {m.id for m in matched}
            # enrolment and referral are separate topics: the referral may have been matched
            # against an empty directory first; the decisions that invited must show their inputs
            inviting = [a for a in audit if a.data["output"]["newly_invited"]]
            assert inviting and all(a.data["output"]["referral_id"] == rid for a in audit)
            assert all(a.data["inputs"]["providers"] for a in inviting)
            invitation = next(e for e in reader.events[t("notifications")]
                              if e.data["webhook_type"] == "referral.invited")
            assert invitation.data["referral_id"] == rid and "child_ref" not in invitation.data["data"]

            await runtime.bus.publish([
                msg("referral", "offer-submitted", rid, {
                    "offer_id": "o1", "provider_id": p1, "weekly_fee_pence": 425000,
                    "start_date": "2026-09-01", "notes": "", "submitted_at": "2026-05-02T10:00:00Z"}),
                msg("referral", "offer-submitted", rid, {
                    "offer_id": "o2", "provider_id": p2, "weekly_fee_pence": 400000,
                    "start_date": "2026-09-01", "notes": "", "submitted_at": "2026-05-02T11:00:00Z"}),
            ])

            async def ranked_both() -> Envelope:
                await reader.poll()
                ranked = [e for e in reader.events[t("matching")] if e.type == "shortlist-ranked"
                          and len(e.data["entries"]) == 2]
                assert ranked
                return ranked[-1]
            ranked = await wait_for(ranked_both, timeout=60)
            # lowest 400000: p1 price 94.12 -> 48 + 37.648 = 85.65 ; p2 0.6*90 + 40 = 94.00
            assert [(e["offer_id"], e["score"]) for e in ranked.data["entries"]] == [("o2", "94.00"), ("o1", "85.65")]
            assert ranked.data["policy_version"] == 1

            async def ranked_audited() -> bool:
                await reader.poll()
                return any(e.data["decision"] == "shortlist-ranked" and e.data["event_id"] == ranked.id
                           for e in reader.events[t("audit")])
            await wait_for(ranked_audited, timeout=30)

            shortlist = await client.get(f"/referrals/{rid}/shortlist", headers=auth(settings, "borough", "croydon"))
            body = shortlist.json()
            assert body["entries"] == ranked.data["entries"]
            ready = await client.get("/ready")
            assert ready.status_code == 200 and ready.json()["checks"] == {"database": True, "bus": True}
        finally:
            await reader.consumer.stop()
