"""The placement service on real Kafka and real PostgreSQL: a `placement-awarded` on the referral
topic opens a placement; start, review, fee change and an unplanned ending follow over HTTP, and
every event is on `placematch.placement`; replay from the topics, with the service's journal,
rebuilds the views in PostgreSQL byte for byte."""
from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from services.placement.app import create_app
from services.placement.domain import awarded_placement_id
from services.placement.replay import inputs_from_bus, replay_placement
from shared.bus import Message
from shared.events import Envelope
from shared.settings import Settings
from shared.testing import auth, service_client
from tests.helpers import read_whole_topic, wait_for
from tests.unit.placement.test_api import NEEDS, OUTCOMES, REFERRAL, TODAY

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def test_award_to_unplanned_end_on_kafka_and_postgres(kafka_bootstrap: str, fresh_database_url: str,
                                                           kafka_topic_prefix: str, tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=fresh_database_url,
                        topic_prefix=kafka_topic_prefix, data_dir=tmp_path, relay_poll_seconds=0.1,
                        kafka_partitions=1, placement_review_check_seconds=3600)
    app = create_app(settings)
    rid, provider = str(uuid.uuid4()), str(uuid.uuid4())
    pid = awarded_placement_id(rid, "o1")
    borough, own = auth(settings, "borough", "croydon"), auth(settings, "provider", provider)
    t = settings.topic

    def msg(type_: str, data: dict[str, Any]) -> Message:
        e = Envelope(type=type_, subject=rid, data=data, source="placematch/referral")
        return Message(t("referral"), rid, e.to_json())

    async with service_client(app) as client:
        runtime = app.state.runtime
        await runtime.consumers_ready(60)
        await runtime.bus.publish([
            msg("referral-raised", REFERRAL),
            msg("placement-awarded", {"offer_id": "o1", "provider_id": provider, "weekly_fee_pence": 420000,
                                      "justification": None, "top_ranked_offer_id": "o1", "not_selected": [],
                                      "borough": "croydon", "awarded_at": f"{TODAY - timedelta(days=30)}T10:00:00Z"}),
        ])

        async def opened() -> Any:
            r = await client.get(f"/placements/{pid}", headers=borough)
            return r.json() if r.status_code == 200 else None
        view = await wait_for(opened, timeout=60)
        assert [o["outcome"] for o in view["outcomes"]] == OUTCOMES and view["weekly_fee_pence"] == 420000
        assert (await client.get(f"/placements/{pid}", headers=auth(settings, "borough", "lambeth"))).status_code == 404

        started = TODAY - timedelta(days=21)
        r = await client.post(f"/placements/{pid}/start", json={"started_on": str(started)}, headers=own)
        assert r.status_code == 200, r.text
        r = await client.post(f"/placements/{pid}/reviews", headers=borough, json={
            "reviewed_on": str(TODAY - timedelta(days=7)), "continues": True, "needs_profile": {**NEEDS, "voice": 1},
            "outcomes": [{"outcome": OUTCOMES[0], "progress": "progressing"},
                         {"outcome": OUTCOMES[1], "progress": "not_started", "note": "aid arrives next month"}]})
        assert r.status_code == 201 and r.json()["distance_travelled"]["voice"] == -1, r.text
        r = await client.post(f"/placements/{pid}/fee-changes", headers=own, json={
            "weekly_fee_pence": 441000, "effective_from": str(TODAY - timedelta(days=7)), "reason": "Annual uplift"})
        assert r.status_code == 201, r.text
        change_id = r.json()["fee_changes"][0]["change_id"]
        r = await client.post(f"/placements/{pid}/fee-changes/{change_id}/decision", headers=borough,
                              json={"decision": "agreed"})
        assert r.status_code == 200 and r.json()["weekly_fee_pence"] == 441000
        # two requests at once on PostgreSQL: one is recorded, the other finds it pending
        ask = {"weekly_fee_pence": 460000, "effective_from": str(TODAY), "reason": "Staffing costs"}
        both = await asyncio.gather(*(client.post(f"/placements/{pid}/fee-changes", headers=own, json=ask)
                                      for _ in range(2)))
        assert sorted(b.status_code for b in both) == [201, 409], [b.text for b in both]
        assert next(b for b in both if b.status_code == 409).json()["rule"] == "pending_fee_change"
        second = next(b for b in both if b.status_code == 201).json()["fee_changes"][1]["change_id"]
        r = await client.post(f"/placements/{pid}/fee-changes/{second}/decision", headers=borough,
                              json={"decision": "declined", "note": "Not evidenced"})
        assert r.status_code == 200 and r.json()["weekly_fee_pence"] == 441000
        r = await client.post(f"/placements/{pid}/end", headers=own, json={
            "ended_on": str(TODAY), "ending": "unplanned", "reason": "provider_notice"})
        assert r.status_code == 200 and r.json()["status"] == "ended", r.text
        spent = (await client.get(f"/placements/spend?from={started}&to={TODAY}", headers=borough)).json()
        assert spent["total_pence"] == 14 * 60000 + 7 * 63000  # the end day is not charged

        expected = ["placement-opened", "placement-started", "placement-reviewed", "fee-change-requested",
                    "fee-change-decided", "fee-change-requested", "fee-change-decided", "placement-ended"]

        async def published() -> list[Envelope]:
            records = await read_whole_topic(kafka_bootstrap, t("placement"))
            events = [Envelope.from_kafka(r.value, dict(r.headers)) for r in records]
            return events if [e.type for e in events if e.subject == pid] == expected else []
        events = await wait_for(published, timeout=60)
        assert all(e.source == "placematch/placement" and e.data["borough"] == "croydon"
                   and e.data["provider_id"] == provider and e.data["referral_id"] == rid for e in events)
        ended = events[-1]
        assert (ended.data["ending"], ended.data["reason"], ended.data["days"]) == ("unplanned", "provider_notice", 21)
        assert ended.actor == f"provider:{provider}"
        assert all(b"CR-2026" not in e.to_json() and "birth_date" not in e.data for e in events)

        report = await replay_placement(tmp_path, tmp_path / "replay.db", live_url=fresh_database_url,
                                        source=await inputs_from_bus(runtime.bus, t, journal_url=fresh_database_url))
        assert report.ok, report.differences
        assert report.events_recorded == 8 and report.view_rows_compared == 2
