"""Replay rebuilds every placement stream and view byte for byte, from the stores or the topics; and
the audit contribution tells a referral's placement history."""
from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from services.placement.app import create_app
from services.placement.audit import placement_history
from services.placement.domain import awarded_placement_id
from services.placement.replay import inputs_from_bus, replay_placement
from shared.aggregate import NewEvent
from shared.bus import Message
from shared.db import Database, sqlite_url
from shared.events import Envelope
from shared.migrations import create_core_schema
from shared.settings import Settings
from shared.store import EventStore, read_embedded
from shared.testing import auth, service_client
from tests.helpers import wait_for
from tests.unit.placement.test_api import NEEDS, OUTCOMES, REFERRAL, TODAY


async def record_inputs(data_dir: Path, rid: str, provider: str) -> list[Envelope]:
    """The referral service's side: its store holds the inputs (so replay can read them from it)."""
    db = Database(sqlite_url(data_dir / "referral.db"))
    await create_core_schema(db)
    store = EventStore(db, "placematch/referral")
    amended = {**REFERRAL, "outcomes": [*OUTCOMES, "Travel to school independently"]}
    try:
        async with db.transaction() as conn:
            return await store.append(conn, rid, 0, [
                NewEvent("referral-raised", REFERRAL),
                NewEvent("referral-amended", {"changes": {"outcomes": amended["outcomes"]}, "referral": amended}),
                NewEvent("placement-awarded", {
                    "offer_id": "o1", "provider_id": provider, "weekly_fee_pence": 350000, "justification": None,
                    "top_ranked_offer_id": "o1", "not_selected": [], "borough": "croydon",
                    "awarded_at": f"{TODAY - timedelta(days=40)}T10:00:00Z"}),
                NewEvent("offer-submitted", {"offer_id": "late"}),  # not placement's concern
            ])
    finally:
        await db.dispose()


async def test_replay_from_stores_and_topics_matches_byte_for_byte(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05, placement_review_check_seconds=3600)
    rid, provider = str(uuid.uuid4()), str(uuid.uuid4())
    inputs = await record_inputs(tmp_path, rid, provider)
    borough, own = auth(settings, "borough", "croydon"), auth(settings, "provider", provider)
    app = create_app(settings)
    pid = awarded_placement_id(rid, "o1")
    async with service_client(app) as client:
        runtime = app.state.runtime
        await runtime.consumers_ready()
        # a malformed award goes to the dead-letter topic and opens nothing
        poison = Envelope(type="placement-awarded", subject=str(uuid.uuid4()), source="placematch/referral",
                          data={"offer_id": "x", "provider_id": provider, "borough": "croydon"})
        await runtime.bus.publish([Message(settings.topic("referral"), e.subject, e.to_json())
                                   for e in [*inputs, poison, inputs[2]]])  # and a redelivered award

        async def opened() -> Any:
            r = await client.get(f"/placements/{pid}", headers=borough)
            return r.json() if r.status_code == 200 else None
        view = await wait_for(opened)
        # the amended referral's outcomes, not the first ones
        assert [o["outcome"] for o in view["outcomes"]] == [*OUTCOMES, "Travel to school independently"]
        await wait_for(lambda: runtime.consumers[0].dead_lettered == 1)
        dlq = await runtime.bus.read_topic(settings.topic("referral") + ".dlq")
        assert [Envelope.from_json(m.value).id for m in dlq] == [poison.id]

        started = TODAY - timedelta(days=30)
        await client.post(f"/placements/{pid}/start", json={"started_on": str(started)}, headers=own)
        await client.post(f"/placements/{pid}/funding", headers=borough, json={
            "contributions": [{"stream": "education", "weekly_pence": 300000},
                              {"stream": "health", "weekly_pence": 50000, "icb_code": "QKK"}],
            "agreed_from": str(started), "agreed_until": str(started + timedelta(days=365)),
            "review_due": str(TODAY + timedelta(days=3))})
        await client.post(f"/placements/{pid}/reviews", headers=borough, json={
            "reviewed_on": str(TODAY), "continues": True, "needs_profile": {**NEEDS, "voice": 0},
            "outcomes": [{"outcome": o["outcome"], "progress": "progressing"} for o in view["outcomes"]]})
        change = (await client.post(f"/placements/{pid}/fee-changes", headers=own, json={
            "weekly_fee_pence": 360000, "effective_from": str(TODAY), "reason": "Uplift"})).json()
        await client.post(f"/placements/{pid}/fee-changes/{change['fee_changes'][0]['change_id']}/decision",
                          headers=borough, json={"decision": "agreed"})
        off = (await client.post("/placements", headers=borough, json={
            "provider_name": "Named School", "weekly_fee_pence": 200000, "planned_start": str(TODAY),
            "needs_profile": NEEDS, "reason": "parental_preference", "outcomes": [], "referral_id": rid})).json()
        ended = await client.post(f"/placements/{pid}/end", headers=borough, json={
            "ended_on": str(TODAY), "ending": "planned", "reason": "outcomes_met"})
        assert ended.status_code == 200, ended.text
        own_events = [e async for e in runtime.store.iter_all()]
        assert [e.type for e in own_events if e.subject == pid] == [
            "placement-opened", "placement-started", "funding-agreed", "placement-reviewed", "fee-change-requested",
            "fee-change-decided", "placement-ended"]

        from_topics = await inputs_from_bus(runtime.bus, settings.topic)
        bus_report = await replay_placement(tmp_path, tmp_path / "replay-topics.db", source=from_topics)
        assert bus_report.ok, bus_report.differences
        assert bus_report.dead_lettered == [poison.id]

    report = await replay_placement(tmp_path, tmp_path / "replay.db")
    assert report.ok, report.differences
    # 8 placement events + 8 notification requests (borough and provider of the start, the fee change
    # asked and decided, and the end), re-appended as recorded
    assert report.events_recorded == report.events_replayed == 16 and report.view_rows_compared == 3
    assert report.inputs == 4  # raised, amended, award, offer (ignored); the redelivery was no new input

    # a view edited behind the log's back is found
    live = Database(sqlite_url(tmp_path / "placement.db"))
    async with live.transaction() as conn:
        await conn.exec_driver_sql("UPDATE placement_placements SET status = 'active' WHERE placement_id = ?",
                                   (pid,))
    await live.dispose()
    tampered = await replay_placement(tmp_path, tmp_path / "replay2.db")
    assert [d.where for d in tampered.differences] == ["view placement_placements"]

    # the audit contribution: both placements of the referral, in order, each with its steps
    history = placement_history(rid, await read_embedded(tmp_path, ("placement",)))
    assert [h["placement_id"] for h in history] == [pid, off["id"]]
    assert [s["type"] for s in history[0]["steps"]][-1] == "placement-ended" and history[0]["outcome"] == "ended"
    assert history[1]["origin"] == "off_framework" and history[1]["outcome"] == "open"
    assert any("outcomes_met" in s["what"] for s in history[0]["steps"])
    assert placement_history(str(uuid.uuid4()), await read_embedded(tmp_path, ("placement",))) == []
