"""Matching over HTTP on SQLite + LocalBus: consumed events in, decisions, notifications, audit out."""
from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.matching.app import create_app
from shared.bus import Message
from shared.events import Envelope
from shared.settings import Settings
from shared.testing import auth, service_client
from shared.vocabulary import NEED_CODES
from tests.helpers import wait_for

PROFILE = {
    "name": "Riverside School", "urn": "100001", "kind": "independent_special_school", "lots": ["ASD", "SEMH"],
    "age_min": 5, "age_max": 19, "genders": ["female", "male"], "placement_types": ["day", "residential_38"],
    "capacity": 4, "location": {"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115},
    "boroughs_served": [], "contact_email": "admissions@riverside.example",
}
REFERRAL = {
    "borough": "croydon", "child_ref": "CR-2026-0042", "birth_date": "2014-05-02", "age_at_start": 12,
    "gender": "male", "primary_need": "ASD", "secondary_needs": ["SLCN"], "placement_type": "day",
    "required_from": "2026-09-01", "location": {"postcode": "CR0 1NX", "lat": 51.372, "lon": -0.099, "district": "CR0"},
    "max_travel_km": 30, "needs_profile": {"voice": 2}, "outcomes": ["Attend school full time"],
    "offer_deadline": "2026-07-01T17:00:00Z", "preferred_provider_id": None, "raised_at": "2026-05-01T09:00:00.000000Z",
}


def env(type_: str, subject: str, data: dict[str, Any], source: str) -> Envelope:
    return Envelope(type=type_, subject=subject, data=data, source=f"placematch/{source}")


async def feed(app: Any, settings: Settings, *events: Envelope) -> None:
    bus = app.state.runtime.bus
    await bus.publish([Message(settings.topic(e.source.split("/")[1]), e.subject, e.to_json()) for e in events])


async def topic_events(app: Any, settings: Settings, short: str) -> list[Envelope]:
    return [Envelope.from_json(m.value) for m in await app.state.runtime.bus.read_topic(settings.topic(short))]


@pytest.fixture
def settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(data_dir=tmp_path, relay_poll_seconds=0.05, consumer_retry_base_seconds=0.01)


async def test_match_rank_policy_and_views(settings: Settings) -> None:
    app = create_app(settings)
    p1, p2, p_far, late = (str(uuid.uuid4()) for _ in range(4))
    rid = str(uuid.uuid4())
    borough = auth(settings, "borough", "croydon")
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        far = {**PROFILE, "location": {"postcode": "M1 1AE", "lat": 53.48, "lon": -2.24}}
        await feed(app, settings,
                   env("provider-approved", p1, {**PROFILE, "quality_score": "80.00"}, "enrolment"),
                   env("provider-approved", p2, {**PROFILE, "quality_score": "90.00"}, "enrolment"),
                   env("provider-approved", p_far, {**far, "quality_score": "99.00"}, "enrolment"),
                   env("referral-raised", rid, REFERRAL, "referral"))

        async def invited() -> list[str]:
            r = await client.get(f"/referrals/{rid}/eligible-providers", headers=borough)
            assert r.status_code == 200, r.text
            return [p["provider_id"] for p in r.json()["providers"]]

        assert sorted(await wait_for(invited)) == sorted([p1, p2])
        every = (await client.get(f"/referrals/{rid}/eligible-providers?all=true", headers=borough)).json()
        far_row = next(p for p in every["providers"] if p["provider_id"] == p_far)
        assert far_row["eligible"] is False and far_row["rules"]["distance"] is False

        # notification requests and audit record, published through the outbox
        async def invitations() -> list[Envelope]:
            found = [e for e in await topic_events(app, settings, "notifications")
                     if e.data["webhook_type"] == "referral.invited"]
            assert len(found) == 2
            return found
        notes = await wait_for(invitations)
        assert {n.data["recipient"]["tenant"] for n in notes} == {p1, p2}
        assert "CR-2026-0042" not in str(notes) and "2014-05-02" not in str(notes)
        matched = [e for e in await topic_events(app, settings, "matching") if e.type == "referral-matched"]
        assert matched[0].subject == rid and matched[0].source == "placematch/matching"
        audit = await wait_for(lambda: topic_events(app, settings, "audit"))
        assert audit[0].type == "decision-recorded" and audit[0].data["event_id"] == matched[0].id

        # a provider approved later is invited to the open referral
        await feed(app, settings, env("provider-approved", late, {**PROFILE, "quality_score": "70.00"}, "enrolment"))
        assert late in await wait_for(lambda: _contains(invited, late))

        # offers -> shortlist
        await feed(app, settings,
                   env("offer-submitted", rid, {"offer_id": "o1", "provider_id": p1, "weekly_fee_pence": 425000,
                                                "start_date": "2026-09-01", "notes": "",
                                                "submitted_at": "2026-05-02T10:00:00Z"}, "referral"),
                   env("offer-submitted", rid, {"offer_id": "o2", "provider_id": p2, "weekly_fee_pence": 500000,
                                                "start_date": "2026-09-01", "notes": "",
                                                "submitted_at": "2026-05-02T11:00:00Z"}, "referral"))

        async def two_entries() -> dict[str, Any]:
            body = (await client.get(f"/referrals/{rid}/shortlist", headers=borough)).json()
            assert len(body["entries"]) == 2
            return body
        body = await wait_for(two_entries)
        # p1: 0.6*80 + 0.4*100 = 88.00 ; p2: price 85.00 -> 54 + 34 = 88.00, tie -> earlier offer (o1)
        assert [(e["offer_id"], e["quality"], e["price"], e["score"], e["rank"]) for e in body["entries"]] == [
            ("o1", "80.00", "100.00", "88.00", 1), ("o2", "90.00", "85.00", "88.00", 2)]
        assert body["policy_version"] == 1

        # provider view: own rank only, no rival price, no price/score components
        mine = (await client.get(f"/referrals/{rid}/shortlist", headers=auth(settings, "provider", p2))).json()
        assert mine["ranked_offers"] == 2 and [e["rank"] for e in mine["entries"]] == [2]
        assert "425000" not in str(mine) and "price" not in mine["entries"][0]
        # other borough and a provider never invited see nothing
        assert (await client.get(f"/referrals/{rid}/shortlist", headers=auth(settings, "borough",
            "lambeth"))).status_code == 404
        assert (await client.get(f"/referrals/{rid}/shortlist", headers=auth(settings, "provider",
            p_far))).status_code == 404
        assert (await client.get(f"/referrals/{rid}/eligible-providers", headers=auth(settings, "provider",
            p1))).status_code == 403

        # policy: bad input refused with field and rule, nothing recorded
        commissioner = auth(settings, "commissioner", "region")
        bad = await client.put("/policy", json={"quality_weight": "0.7", "price_weight": "0.4"}, headers=commissioner)
        assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
        assert (bad.json()["field"], bad.json()["rule"]) == ("price_weight", "weights_sum_to_one")
        bad = await client.put("/policy", json={"quality_weight": "0.333", "price_weight": "0.667"},
            headers=commissioner)
        assert (bad.json()["field"], bad.json()["rule"]) == ("quality_weight", "two_decimal_places")
        missing = await client.put("/policy", json={"quality_weight": "0.5"}, headers=commissioner)
        assert missing.status_code == 422 and missing.json()["field"] == "price_weight"
        assert (await client.put("/policy", json={"quality_weight": "0.5", "price_weight": "0.5"},
            headers=borough)).status_code == 403
        assert (await client.get("/policy", headers=borough)).json()["version"] == 1

        ok = await client.put("/policy", json={"quality_weight": "0.50", "price_weight": "0.50", "min_quality": "85"},
                              headers=commissioner)
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"version": 2, "quality_weight": "0.50", "price_weight": "0.50", "min_quality": "85.00"}
        body = (await client.get(f"/referrals/{rid}/shortlist", headers=borough)).json()
        assert body["policy_version"] == 2
        assert [e["offer_id"] for e in body["entries"]] == ["o2"] and body["entries"][0]["score"] == "95.00"
        assert body["excluded"] == [{"offer_id": "o1", "provider_id": p1, "reason": "below_quality_gate"}]

        # suspension drops the provider out
        await feed(app, settings, env("provider-suspended", p2, {"reason": "safeguarding", "automatic": True},
            "enrolment"))

        async def p2_excluded() -> bool:
            b = (await client.get(f"/referrals/{rid}/shortlist", headers=borough)).json()
            return b["entries"] == [] and {"offer_id": "o2", "provider_id": p2,
                "reason": "provider_suspended"} in b["excluded"]
        await wait_for(p2_excluded)

        # award and insights
        await feed(app, settings, env("placement-awarded", rid, {
            "offer_id": "o1", "provider_id": p1, "weekly_fee_pence": 425000, "justification": "parental preference",
            "top_ranked_offer_id": None, "not_selected": [{"offer_id": "o2", "provider_id": p2}],
            "borough": "croydon", "awarded_at": "2026-05-21T09:00:00Z"}, "referral"))

        async def awarded() -> dict[str, Any]:
            rows = (await client.get("/insights", headers=commissioner)).json()["rows"]
            assert rows and rows[0]["awards"] == 1
            return rows[0]
        row = await wait_for(awarded)
        assert (row["need"], row["month"], row["referrals_raised"], row["offers"]) == ("ASD", "2026-05", 1, 2)
        assert row["providers_invited"] == 3 and row["median_days_to_award"] == "20.00"
        assert row["median_weekly_fee_pence"] == 462500 and row["cost_avoidance_pence_per_week"] == 37500
        assert "croydon" in row["boroughs"]
        market = (await client.get("/insights", headers=auth(settings, "provider", p1))).json()
        assert market["scope"] == "market" and "boroughs" not in market["rows"][0] and "croydon" not in str(market)

        async def award_notes() -> list[str]:
            types = sorted(e.data["webhook_type"] for e in await topic_events(app, settings, "notifications")
                           if e.data["webhook_type"].startswith("offer."))
            assert types == ["offer.accepted", "offer.not_selected"]
            return types
        await wait_for(award_notes)


async def _contains(get, item):  # type: ignore[no-untyped-def]
    values = await get()
    assert item in values
    return values


async def test_no_eligible_provider_notifies_the_borough(settings: Settings) -> None:
    app = create_app(settings)
    rid = str(uuid.uuid4())
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        await feed(app, settings, env("referral-raised", rid, {**REFERRAL, "primary_need": "PMLD"}, "referral"))

        async def borough_note() -> Envelope:
            notes = [e for e in await topic_events(app, settings, "notifications")
                     if e.data["webhook_type"] == "referral.no_eligible_providers"]
            assert notes
            return notes[0]
        note = await wait_for(borough_note)
        assert note.data["recipient"] == {"role": "borough", "tenant": "croydon"}
        body = (await client.get(f"/referrals/{rid}/shortlist", headers=auth(settings, "borough", "croydon"))).json()
        assert body == {"referral_id": rid, "policy_version": 1, "entries": [], "excluded": []}
        assert (await client.get("/referrals/nope/shortlist", headers=auth(settings, "commissioner",
            "r"))).status_code == 404
        assert (await client.get("/policy")).status_code == 401


async def test_same_events_in_same_order_give_byte_identical_shortlists(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from shared.events import dumps

    events = [
        Envelope(type="provider-approved", subject="prov-a", data={**PROFILE, "quality_score": "77.77"},
            source="placematch/enrolment"),
        Envelope(type="provider-approved", subject="prov-b", data={**PROFILE, "quality_score": "91.10"},
            source="placematch/enrolment"),
        Envelope(type="referral-raised", subject="ref-1", data=REFERRAL, source="placematch/referral"),
        *[Envelope(type="offer-submitted", subject="ref-1", source="placematch/referral", data={
            "offer_id": f"o{i}", "provider_id": pid, "weekly_fee_pence": fee, "start_date": "2026-09-01",
            "notes": "", "submitted_at": f"2026-05-02T10:0{i}:00Z"})
          for i, (pid, fee) in enumerate([("prov-a", 333333), ("prov-b", 412345), ("prov-a", 299999)])],
        Envelope(type="provider-rescored", subject="prov-b", data={"quality_score": "60.05", "policy_version": 1},
                 source="placematch/enrolment"),
    ]
    outputs = []
    for run in ("one", "two"):
        settings = Settings(data_dir=tmp_path / run, relay_poll_seconds=0.05, consumer_retry_base_seconds=0.01)
        app = create_app(settings)
        async with service_client(app):
            await app.state.runtime.consumers_ready()
            consumer = app.state.runtime.consumers[0]
            for fed, e in enumerate(events, start=1):  # one at a time: the order across topics is part of the input
                await feed(app, settings, e)
                await wait_for(lambda consumer=consumer, fed=fed: consumer.handled >= fed)

            async def shortlists(app: Any = app, settings: Settings = settings) -> list[bytes]:
                ranked = [dumps(e.data) for e in await topic_events(app, settings, "matching")
                          if e.type == "shortlist-ranked"]
                assert len(ranked) == 4
                return ranked
            outputs.append(await wait_for(shortlists))
    assert outputs[0] == outputs[1]
    assert b"60.05" in outputs[0][-1]


async def test_providers_cannot_work_out_a_rivals_fee_from_insights(settings: Settings) -> None:
    """Two offers in a cell: the median with one's own fee would give the other's away."""
    app = create_app(settings)
    rid, p1, p2 = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        await feed(app, settings,
                   env("provider-approved", p1, {**PROFILE, "quality_score": "80.00"}, "enrolment"),
                   env("provider-approved", p2, {**PROFILE, "urn": "100002", "quality_score": "70.00"}, "enrolment"),
                   env("referral-raised", rid, REFERRAL, "referral"))
        for pid, fee in ((p1, 400000), (p2, 300000)):
            await feed(app, settings, env("offer-submitted", rid, {
                "offer_id": str(uuid.uuid4()), "provider_id": pid, "weekly_fee_pence": fee,
                "start_date": "2026-09-01", "notes": "", "submitted_at": "2026-05-02T09:00:00.000000Z"}, "referral"))

        async def counted(role: str, tenant: str) -> dict[str, Any] | None:
            rows = (await client.get("/insights", headers=auth(settings, role, tenant))).json()["rows"]
            return rows[0] if rows and rows[0]["offers"] == 2 else None
        commissioner = await wait_for(lambda: counted("commissioner", "region"))
        assert commissioner["median_weekly_fee_pence"] == 350000
        provider = await wait_for(lambda: counted("provider", p1))
        assert provider["median_weekly_fee_pence"] is None and "cost_avoidance_pence_per_week" not in provider
        assert (provider["providers"], provider["suppressed"], provider["suppressed_reason"]) == (2, True,
            "too_few_providers")
        assert "borough" not in provider and "boroughs" not in provider


def offer(rid: str, offer_id: str, provider_id: str, fee: int) -> Envelope:
    return env("offer-submitted", rid, {
        "offer_id": offer_id, "provider_id": provider_id, "weekly_fee_pence": fee,
        "start_date": "2026-09-01", "notes": "", "submitted_at": "2026-05-02T09:00:00.000000Z"}, "referral")


def award(rid: str, offer_id: str, provider_id: str, fee: int, not_selected: list[dict[str, str]]) -> Envelope:
    return env("placement-awarded", rid, {
        "offer_id": offer_id, "provider_id": provider_id, "weekly_fee_pence": fee, "justification": None,
        "top_ranked_offer_id": offer_id, "not_selected": not_selected, "borough": "croydon",
        "awarded_at": "2026-05-21T09:00:00Z"}, "referral")


async def insight_row(client: Any, settings: Settings, role: str, tenant: str, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/insights{query}", headers=auth(settings, role, tenant))
    assert response.status_code == 200, response.text
    rows = response.json()["rows"]
    assert len(rows) == 1
    return rows[0]


async def test_padding_a_cell_with_withdrawn_offers_does_not_reveal_a_rivals_fee(settings: Settings) -> None:
    """The finding: invited with one rival (437123), the attacker offers 1, 1, 10,000,000 and
    10,000,000 pence, withdrawing each, and the market view counted 5 offers with the rival's fee
    as their median. Withdrawn offers count nowhere now, and one provider is not five."""
    app = create_app(settings)
    rid, attacker, rival = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        events = [env("provider-approved", attacker, {**PROFILE, "quality_score": "80.00"}, "enrolment"),
                  env("provider-approved", rival, {**PROFILE, "urn": "100002", "quality_score": "70.00"}, "enrolment"),
                  env("referral-raised", rid, REFERRAL, "referral"),
                  offer(rid, "rival-offer", rival, 437123)]
        for n, fee in enumerate((1, 1, 10_000_000, 10_000_000)):
            events += [offer(rid, f"pad-{n}", attacker, fee),
                       env("offer-withdrawn", rid, {"offer_id": f"pad-{n}", "provider_id": attacker, "reason": None},
                           "referral")]
        events.append(award(rid, "rival-offer", rival, 437123, []))  # settled: the month is final
        await feed(app, settings, *events)

        async def awarded() -> dict[str, Any]:
            row = await insight_row(client, settings, "commissioner", "region")
            assert row["awards"] == 1
            return row
        full = await wait_for(awarded)
        market = await insight_row(client, settings, "provider", attacker)
        assert (market["offers"], market["median_weekly_fee_pence"]) == (1, None)  # was 5, 437123
        assert (full["offers"], full["median_weekly_fee_pence"]) == (1, 437123)
        assert full["cost_avoidance_pence_per_week"] == 0  # the padding moved cost avoidance too
        assert full["providers"] == market["providers"] == 1
        assert market["suppressed"] is True and market["suppressed_reason"] == "too_few_providers"
        assert "437123" not in (await client.get("/insights", headers=auth(settings, "provider", attacker))).text


async def test_providers_see_a_median_of_five_distinct_providers_once_the_month_is_final(settings: Settings) -> None:
    """Two referrals of one month: four providers on the first (one withdraws and offers again:
    its latest offer counts), a fifth on the second. Five providers, but a referral still open:
    suppressed; once both are awarded the median of the five appears, the same however asked.
    (A month long past, so that it is over whatever the clock says.)"""
    app = create_app(settings)
    raised = {**REFERRAL, "raised_at": "2024-05-01T09:00:00.000000Z"}
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    ps = [str(uuid.uuid4()) for _ in range(5)]
    fees = [300000, 350000, 400000, 450000, 500000]
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        await feed(app, settings,
                   *(env("provider-approved", p, {**PROFILE, "urn": f"10000{i}", "quality_score": "80.00"}, "enrolment")
                     for i, p in enumerate(ps)),
                   env("referral-raised", first, raised, "referral"),
                   env("referral-raised", second, {**raised, "borough": "lambeth"}, "referral"),
                   offer(first, "o0-old", ps[0], 900000),
                   env("offer-withdrawn", first, {"offer_id": "o0-old", "provider_id": ps[0], "reason": None},
                       "referral"),
                   *(offer(first, f"o{i}", ps[i], fees[i]) for i in range(4)),
                   offer(second, "o4", ps[4], fees[4]))

        async def five() -> dict[str, Any]:
            row = await insight_row(client, settings, "provider", ps[0])
            assert row["providers"] == 5 and row["offers"] == 5
            return row
        row = await wait_for(five)
        assert row["suppressed_reason"] == "cohort_open" and row["median_weekly_fee_pence"] is None

        await feed(app, settings,
                   award(first, "o0", ps[0], fees[0], [{"offer_id": f"o{i}", "provider_id": ps[i]} for i in (1, 2, 3)]),
                   award(second, "o4", ps[4], fees[4], []))

        async def final() -> dict[str, Any]:
            row = await insight_row(client, settings, "provider", ps[1])
            assert row["suppressed"] is False
            return row
        row = await wait_for(final)
        assert (row["median_weekly_fee_pence"], row["suppressed_reason"], row["awards"]) == (400000, None, 2)
        assert "cost_avoidance_pence_per_week" not in row and "boroughs" not in row
        for query in ("?need=ASD", "?month=2024-05", "?need=ASD&month=2024-05", "?borough=croydon"):
            assert await insight_row(client, settings, "provider", ps[1], query) == row
        full = await insight_row(client, settings, "commissioner", "region")
        assert full["boroughs"]["croydon"]["median_weekly_fee_pence"] == 375000  # commissioners: full figures


async def test_typed_inputs_are_refused_with_field_and_rule_and_change_nothing(settings: Settings) -> None:
    """The policy weights keep the rule words they always had (pydantic's for what is not a number;
    the policy's `range` before `two_decimal_places`); `need` is a NeedCode and `month` YYYY-MM."""
    app = create_app(settings)
    commissioner = auth(settings, "commissioner", "region")
    async with service_client(app) as client:
        for body, field, rule in [
            ({"quality_weight": "abc", "price_weight": "0.40"}, "quality_weight", "decimal_parsing"),
            ({"quality_weight": None, "price_weight": "0.40"}, "quality_weight", "decimal_type"),
            ({"quality_weight": "NaN", "price_weight": "0.40"}, "quality_weight", "finite_number"),
            ({"quality_weight": True, "price_weight": "0.40"}, "quality_weight", "decimal_type"),
            ({"quality_weight": "1.5", "price_weight": "-0.5"}, "quality_weight", "range"),
            ({"quality_weight": "1.555", "price_weight": "0.40"}, "quality_weight", "range"),
            ({"quality_weight": "1e27", "price_weight": "0.40"}, "quality_weight", "range"),
            ({"quality_weight": "0.60", "price_weight": 0.405}, "price_weight", "two_decimal_places"),
            ({"quality_weight": "0.60", "price_weight": "0.40", "min_quality": "101"}, "min_quality", "range"),
            ({"quality_weight": "0.60", "price_weight": "0.40", "min_quality": True}, "min_quality", "decimal_type"),
            ({"quality_weight": "0.60", "price_weight": "0.40", "min_quality": "50.001"}, "min_quality",
             "two_decimal_places"),
            ({"quality_weight": "0.60", "price_weight": "0.40", "extra": 1}, "extra", "extra_forbidden"),
        ]:
            r = await client.put("/policy", json=body, headers=commissioner)
            assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), body
            assert (r.json()["field"], r.json()["rule"]) == (field, rule), (body, r.json())
        assert (await client.get("/policy", headers=commissioner)).json()["version"] == 1
        ok = await client.put("/policy", json={"quality_weight": 0.7, "price_weight": "0.3"}, headers=commissioner)
        assert ok.json() == {"version": 2, "quality_weight": "0.70", "price_weight": "0.30", "min_quality": None}

        for query, field, rule in [("need=XYZ", "need", "one_of"), ("month=2024-5", "month", "format")]:
            r = await client.get(f"/insights?{query}", headers=commissioner)
            assert r.status_code == 422 and (r.json()["field"], r.json()["rule"]) == (field, rule), r.json()
        assert (await client.get("/insights?need=ASD&month=2024-05", headers=commissioner)).json()["rows"] == []

        openapi = (await client.get("/openapi.json")).json()
        params = {p["name"]: p for p in openapi["paths"]["/insights"]["get"]["parameters"]}
        assert "#/components/schemas/NeedCode" in str(params["need"]["schema"])
        assert openapi["components"]["schemas"]["NeedCode"]["enum"] == list(NEED_CODES)
