"""`placematch replay --from topics` on real Kafka and PostgreSQL: matching's decisions are
re-derived from the topics alone (a fresh consumer group, read from the beginning) and equal the
recorded ones; with matching's journal as the order too; a changed weight shows as differences;
the live consumer group's offsets are not touched."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import func, select

from services.matching.app import create_app
from services.matching.replay import DECISIONS, inputs_from_bus, replay_matching
from shared.bus import KafkaBus, Message
from shared.consumers import input_order
from shared.events import Envelope
from shared.schema import events, outbox
from shared.settings import Settings
from shared.testing import auth, service_client
from tests.helpers import wait_for
from tests.unit.matching.test_api import PROFILE, REFERRAL

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _group_offsets(bootstrap: str, group: str) -> dict[Any, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items()}
    finally:
        await admin.close()


async def test_replay_from_kafka_topics_reproduces_every_decision(
        kafka_bootstrap: str, fresh_database_url: str, kafka_topic_prefix: str, tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=fresh_database_url,
                        topic_prefix=kafka_topic_prefix, data_dir=tmp_path, relay_poll_seconds=0.1)
    app = create_app(settings)  # 3 partitions per topic: order across partitions is not kept by Kafka
    t = settings.topic
    providers = [str(uuid.uuid4()) for _ in range(3)]
    referrals = [str(uuid.uuid4()) for _ in range(2)]

    def msg(topic: str, type_: str, subject: str, data: dict[str, Any]) -> Message:
        e = Envelope(type=type_, subject=subject, data=data, source=f"placematch/{topic}")
        return Message(t(topic), subject, e.to_json())

    async with service_client(app) as client:
        runtime = app.state.runtime

        async def settle(inputs: int) -> None:
            """Matching took `inputs` events in and published everything it decided."""
            async def done() -> bool:
                async with runtime.db.read() as conn:
                    taken = len(await input_order(conn))
                    pending = (await conn.execute(select(func.count()).select_from(outbox))).scalar_one()
                return taken == inputs and pending == 0
            await wait_for(done, timeout=60, message=f"matching to take {inputs} inputs and publish")

        await runtime.consumers_ready(60)
        # phases one after another: event time is then the order matching took them in
        await runtime.bus.publish([msg("enrolment", "provider-approved", p, {**PROFILE, "quality_score": q})
                                   for p, q in zip(providers, ("80.00", "90.00", "70.00"), strict=True)])
        await settle(3)
        raised = [msg("referral", "referral-raised", r, REFERRAL) for r in referrals]
        await runtime.bus.publish(raised)
        await settle(5)
        for i, (p, fee) in enumerate(zip(providers, (400000, 350000, 300000), strict=True)):
            await runtime.bus.publish([msg("referral", "offer-submitted", referrals[i % 2], {
                "offer_id": str(uuid.uuid4()), "provider_id": p, "weekly_fee_pence": fee,
                "start_date": "2026-09-01", "notes": "", "submitted_at": "2026-05-02T10:00:00Z"})])
            await settle(6 + i)
        changed = await client.put("/policy", json={"quality_weight": "0.5", "price_weight": "0.5"},
                                   headers=auth(settings, "commissioner", "region"))
        assert changed.status_code == 200, changed.text
        await settle(9)
        await runtime.bus.publish([msg("enrolment", "provider-rescored", providers[1],
                                       {"quality_score": "60.00", "policy_version": 1})])
        await settle(10)
        await runtime.bus.publish([raised[0]])  # an at-least-once copy on the topic: the same event
        unusable = msg("referral", "offer-submitted", referrals[0], {})  # live sends it to the DLQ
        await runtime.bus.publish([unusable])
        await wait_for(lambda: runtime.consumers[0].dead_lettered == 1, timeout=60, message="the DLQ")
        async with runtime.db.read() as conn:
            recorded = (await conn.execute(select(func.count()).select_from(events)
                                           .where(events.c.type.in_(DECISIONS)))).scalar_one()
        live_group = runtime.consumers[0].name

        async def all_committed() -> dict[Any, int] | None:  # 11 messages on its two topics: copy, unusable
            offsets = await _group_offsets(kafka_bootstrap, live_group)
            return offsets if sum(offsets.values()) == 11 else None
        offsets_before = await wait_for(all_committed, timeout=60, message="the live group to commit the copy")

        bus = KafkaBus(kafka_bootstrap)
        by_time = await inputs_from_bus(bus, t)
        assert len(by_time.inputs) == 11 and "event time" in by_time.source
        assert sum(map(len, by_time.recorded.values())) == recorded >= 6
        report = await replay_matching(tmp_path, tmp_path / "by-time.db", source=by_time)
        assert report.ok, report.differences[:3]
        assert report.inputs == 10 and report.decisions_replayed == recorded
        assert report.dead_lettered == [Envelope.from_kafka(unusable.value).id]

        by_journal = await inputs_from_bus(bus, t, journal_url=fresh_database_url)
        # the same inputs, less the unusable one; within a phase (three approvals published at once)
        # the orders may differ
        journaled = [e for _, e in by_journal.order]
        assert sorted(journaled) == sorted(e for _, e in by_time.order if e not in report.dead_lettered)
        assert (await replay_matching(tmp_path, tmp_path / "by-journal.db", source=by_journal)).ok

        what_if = await replay_matching(tmp_path, tmp_path / "what-if.db", source=by_time,
                                        quality_weight="0.9", price_weight="0.1")
        assert not what_if.ok and what_if.differences
        assert all(d.recorded and d.recorded.startswith("shortlist-ranked") for d in what_if.differences)

        assert await _group_offsets(kafka_bootstrap, live_group) == offsets_before


async def test_reading_a_missing_topic_is_a_clear_error(kafka_bootstrap: str, kafka_topic_prefix: str) -> None:
    bus = KafkaBus(kafka_bootstrap)
    with pytest.raises(LookupError, match="no topic"):
        await bus.read_topics([f"{kafka_topic_prefix}placematch.nothing-here"], f"{kafka_topic_prefix}replay")
