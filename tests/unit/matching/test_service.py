"""One scenario through every reaction and the policy command, against what matching recorded before
issue 13 (`scenario.golden`, written by the code of `class Matching`): decisions, notification
requests, decision records and read responses stay byte for byte the same; and replay re-derives
every decision from the topics in the journal's order."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from services.matching.app import create_app
from services.matching.replay import inputs_from_bus, replay_matching
from services.matching.service import POLICY_JOURNAL
from shared.bus import Message
from shared.consumers import input_order
from shared.events import Envelope, dumps
from shared.settings import Settings
from shared.testing import auth, service_client
from tests.helpers import wait_for

GOLDEN = Path(__file__).with_name("scenario.golden")
# uuid5 ids: those of notifications caused by a policy change derive from its (random) event id
DERIVED_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")

PROFILE = {"name": "Riverside", "urn": "1", "kind": "independent_special_school", "lots": ["ASD", "SEMH"],
           "age_min": 5, "age_max": 19, "genders": ["female", "male"], "placement_types": ["day"], "capacity": 4,
           "location": {"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115}, "boroughs_served": [],
           "contact_email": "a@x.example"}
FAR = {**PROFILE, "location": {"postcode": "M1 1AE", "lat": 53.48, "lon": -2.24}}
REF = {"borough": "croydon", "child_ref": "C1", "birth_date": "2014-05-02", "age_at_start": 12, "gender": "male",
       "primary_need": "ASD", "secondary_needs": ["SLCN"], "placement_type": "day", "required_from": "2026-09-01",
       "location": {"postcode": "CR0 1NX", "lat": 51.372, "lon": -0.099, "district": "CR0"}, "max_travel_km": 30,
       "needs_profile": {"voice": 2}, "outcomes": ["x"], "offer_deadline": "2026-07-01T17:00:00Z",
       "preferred_provider_id": None, "raised_at": "2026-05-01T09:00:00.000000Z"}


class Steps:
    def __init__(self) -> None:
        self.n = 0

    def ev(self, type_: str, subject: str, data: dict[str, Any], source: str) -> Envelope:
        self.n += 1
        n = self.n
        return Envelope(type=type_, subject=subject, data=data, source=f"placematch/{source}",
                        id=f"00000000-0000-0000-0000-{n:012d}",
                        time=f"2026-05-0{1 + n // 10}T10:{n % 60:02d}:00.000000Z")

    def offer(self, referral: str, offer: str, provider: str, fee: int, at: str) -> Envelope:
        return self.ev("offer-submitted", referral, {
            "offer_id": offer, "provider_id": provider, "weekly_fee_pence": fee, "start_date": "2026-09-01",
            "notes": "", "submitted_at": at}, "referral")


def scenario() -> list[Envelope | dict[str, Any]]:
    """Every reaction (approved, updated, suspended, rescored, reinstated, rejected; raised, amended,
    withdrawn, offers in and out, declined, awarded, closed, unknown referral, malformed data) and two
    policy changes (a dict: the body of `PUT /policy`)."""
    s = Steps()
    return [
        s.ev("provider-approved", "p1", {**PROFILE, "quality_score": "80.00"}, "enrolment"),
        s.ev("provider-approved", "p2", {**PROFILE, "quality_score": "90.00"}, "enrolment"),
        s.ev("provider-approved", "pfar", {**FAR, "quality_score": "99.00"}, "enrolment"),
        s.ev("provider-approved", "p4", {**PROFILE, "capacity": 0, "quality_score": 55.5}, "enrolment"),
        s.ev("referral-raised", "r1", REF, "referral"),
        s.ev("referral-raised", "r2", {**REF, "primary_need": "HI"}, "referral"),
        s.ev("referral-raised", "r3", {**REF, "location": None, "max_travel_km": None}, "referral"),
        s.offer("r1", "o1", "p1", 425000, "2026-05-02T10:00:00Z"),
        s.offer("r1", "o2", "p2", 500000, "2026-05-02T11:00:00Z"),
        s.offer("r3", "o3", "p1", 400000, "2026-05-02T11:00:00Z"),
        s.offer("r3", "o3b", "p2", 400000, "2026-05-02T11:00:00Z"),
        {"quality_weight": "0.50", "price_weight": "0.50", "min_quality": "85"},
        s.ev("provider-rescored", "p1", {"quality_score": "90.05", "policy_version": 1}, "enrolment"),
        s.ev("provider-updated", "p2", {"profile": {**PROFILE, "capacity": 2}, "quality_score": "70.10"}, "enrolment"),
        s.ev("provider-suspended", "p2", {"reason": "safeguarding", "automatic": True}, "enrolment"),
        {"quality_weight": "0.70", "price_weight": "0.30"},
        s.ev("provider-reinstated", "p2", {**PROFILE, "quality_score": "88.00"}, "enrolment"),
        s.ev("provider-approved", "late", {**PROFILE, "quality_score": "70.00"}, "enrolment"),
        s.offer("r1", "o9", "late", 410000, "2026-05-03T11:00:00Z"),
        s.ev("offer-withdrawn", "r1", {"offer_id": "o1", "provider_id": "p1", "reason": None}, "referral"),
        s.ev("invitation-declined", "r1", {"provider_id": "pfar", "reason": "outside_area"}, "referral"),
        s.ev("referral-amended", "r1", {"referral": {**REF, "max_travel_km": 400}}, "referral"),
        s.offer("r1", "o10", "pfar", 300000, "2026-05-04T11:00:00Z"),
        s.ev("offer-submitted", "r1", {"offer_id": "bad", "provider_id": "p1", "weekly_fee_pence": "x",
                                       "submitted_at": 1}, "referral"),
        s.ev("placement-awarded", "r1", {
            "offer_id": "o2", "provider_id": "p2", "weekly_fee_pence": 500000, "justification": "j",
            "top_ranked_offer_id": None, "borough": "croydon", "awarded_at": "2026-05-21T09:00:00Z",
            "not_selected": [{"offer_id": "o9", "provider_id": "late"}, {"offer_id": "o10", "provider_id": "pfar"}]},
            "referral"),
        s.ev("referral-closed", "r2", {"reason": "unfilled"}, "referral"),
        s.ev("referral-withdrawn", "r3", {"reason": "x"}, "referral"),
        s.ev("provider-rejected", "p4", {"reason": "x"}, "enrolment"),
        s.ev("referral-closed", "nope", {"reason": "unfilled"}, "referral"),
    ]


async def test_every_reaction_and_the_policy_command_record_what_they_always_did(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05, consumer_retry_base_seconds=0.01,
                        consumer_max_attempts=1)
    app = create_app(settings)
    runtime = app.state.runtime
    lines = []
    commissioner = auth(settings, "commissioner", "x")
    async with service_client(app) as client:
        await runtime.consumers_ready()
        consumer, fed = runtime.consumers[0], 0
        for step in scenario():
            if isinstance(step, dict):
                r = await client.put("/policy", json=step, headers=commissioner)
                lines.append(f"PUT {r.status_code} {r.text}")
                continue
            await runtime.bus.publish([Message(settings.topic(step.source.split("/")[1]), step.subject,
                                               step.to_json())])
            fed += 1
            await wait_for(lambda fed=fed: consumer.handled + consumer.dead_lettered >= fed, timeout=20)
        assert consumer.dead_lettered == 1
        for path in ("/referrals/r1/eligible-providers?all=true", "/referrals/r1/shortlist", "/referrals/r3/shortlist",
                     "/policy", "/insights"):
            r = await client.get(path, headers=commissioner)
            lines.append(f"GET {path} {r.status_code} {r.text}")
        r = await client.get("/referrals/r1/shortlist", headers=auth(settings, "provider", "late"))
        lines.append(f"GET provider shortlist {r.status_code} {r.text}")
        async for e in runtime.store.iter_all():
            data = dict(e.data)
            if e.type == "decision-recorded":
                data.pop("event_id")
            lines.append(f"{e.type} {e.subject if e.type != 'decision-recorded' else ''} {dumps(data).decode()}")
        got = DERIVED_ID.sub("ID", "\n".join(lines) + "\n")
        assert got.splitlines() == GOLDEN.read_text().splitlines()

        # the policy changes took their place in the journal; replay re-derives every decision
        async with runtime.db.read() as conn:
            assert [c for c, _ in await input_order(conn)].count(POLICY_JOURNAL) == 2

        async def published() -> bool:
            return len(await runtime.bus.read_topic(settings.topic("matching"))) == 2 + 6 + 19
        await wait_for(published)
        source = await inputs_from_bus(runtime.bus, settings.topic, journal_url=settings.database_url_for("matching"))
        report = await replay_matching(tmp_path, tmp_path / "replayed.db", source=source)
    assert report.ok, report.differences[:1]
    assert report.decisions_recorded == report.decisions_replayed == 25
    assert report.inputs == len(source.order) and POLICY_JOURNAL in {c for c, _ in source.order}
