"""The placement service over HTTP on SQLite + LocalBus: an award opens a placement; start, funding,
review, fee change, spend, reviews due, ending; collapse; off-framework; tenancy and bad input."""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from services.placement import service
from services.placement.app import create_app
from services.placement.domain import awarded_placement_id
from shared.bus import Message
from shared.events import Envelope
from shared.settings import Settings
from shared.testing import auth, service_client
from shared.vocabulary import NEEDS_INDICATORS, now_utc
from tests.helpers import wait_for

TODAY = now_utc().date()  # the service's "today"
NEEDS = dict.fromkeys(NEEDS_INDICATORS, 2)
OUTCOMES = ["Attend school full time by spring term", "Use a communication aid at home"]
REFERRAL = {
    "borough": "croydon", "child_ref": {"sealed": "gAAAA-CR-2026-0042"}, "birth_date": {"sealed": "gAAAA-2014"},
    "age_at_start": 12, "gender": "male", "primary_need": "ASD", "secondary_needs": ["SLCN"], "placement_type": "day",
    "required_from": (TODAY - timedelta(days=60)).isoformat(),
    "location": {"postcode": "CR0 1NX", "lat": 51.372, "lon": -0.099, "district": "CR0"},
    "max_travel_km": 30, "needs_profile": NEEDS, "outcomes": OUTCOMES,
    "offer_deadline": "2026-07-01T17:00:00Z", "preferred_provider_id": None, "raised_at": "2026-05-01T09:00:00Z",
}


def env(type_: str, subject: str, data: dict[str, Any], source: str) -> Envelope:
    return Envelope(type=type_, subject=subject, data=data, source=f"placematch/{source}")


async def feed(app: Any, settings: Settings, *events: Envelope) -> None:
    await app.state.runtime.bus.publish(
        [Message(settings.topic(e.source.split("/")[1]), e.subject, e.to_json()) for e in events])


async def topic_events(app: Any, settings: Settings) -> list[Envelope]:
    return [Envelope.from_json(m.value) for m in await app.state.runtime.bus.read_topic(settings.topic("placement"))]


def award(rid: str, offer_id: str, provider_id: str, fee: int = 420000) -> Envelope:
    return env("placement-awarded", rid, {
        "offer_id": offer_id, "provider_id": provider_id, "weekly_fee_pence": fee, "justification": "Tribunal",
        "top_ranked_offer_id": offer_id, "not_selected": [], "borough": "croydon",
        "awarded_at": f"{(TODAY - timedelta(days=30)).isoformat()}T10:00:00Z"}, "referral")


def shortlist(rid: str, entries: list[tuple[str, str, int]]) -> Envelope:
    return env("shortlist-ranked", rid, {"referral_id": rid, "borough": "croydon", "policy_version": 1, "excluded": [],
                                         "entries": [{"rank": i + 1, "offer_id": o, "provider_id": p,
                                                      "weekly_fee_pence": f, "quality": "80.00", "price": "100.00",
                                                      "score": "88.00"} for i, (o, p, f) in enumerate(entries)]},
               "matching")


def problem(response: httpx.Response, status: int) -> tuple[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    return body.get("field"), body.get("rule")


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(data_dir=tmp_path, relay_poll_seconds=0.05, consumer_retry_base_seconds=0.01,
                    placement_review_check_seconds=3600)


async def opened(app: Any, client: httpx.AsyncClient, settings: Settings, rid: str, offer: str,
                 provider: str) -> dict[str, Any]:
    pid = awarded_placement_id(rid, offer)
    reader = auth(settings, "auditor", "audit")

    async def ready() -> Any:
        r = await client.get(f"/placements/{pid}", headers=reader)
        return r.json() if r.status_code == 200 else None
    return await wait_for(ready, message="the placement opened by the award")


async def test_award_to_unplanned_end(settings: Settings) -> None:
    app = create_app(settings)
    rid, provider, rival = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    borough, other_borough = auth(settings, "borough", "croydon"), auth(settings, "borough", "lambeth")
    own, other = auth(settings, "provider", provider), auth(settings, "provider", rival)
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        await feed(app, settings, env("referral-raised", rid, REFERRAL, "referral"), award(rid, "o1", provider))
        view = await opened(app, client, settings, rid, "o1", provider)
        pid = view["id"]
        assert view["status"] == "awarded" and view["origin"] == "award" and not view["off_framework"]
        assert [o["outcome"] for o in view["outcomes"]] == OUTCOMES
        assert view["needs_over_time"][0]["needs_profile"] == NEEDS and view["weekly_fee_pence"] == 420000
        assert view["planned_start"] == REFERRAL["required_from"] and view["primary_need"] == "ASD"
        assert view["justification"] == "Tribunal"  # the borough's reasons, kept from the award

        # tenancy: 404 for another tenant, never 403
        for headers in (other_borough, other):
            assert problem(await client.get(f"/placements/{pid}", headers=headers), 404)[0] == "placement_id"
            assert (await client.post(f"/placements/{pid}/start", json={"started_on": TODAY.isoformat()},
                                      headers=headers)).status_code == 404
        assert (await client.get(f"/placements/{pid}", headers=own)).json()["justification"] is None
        assert (await client.get("/placements", headers=other_borough)).json()["placements"] == []
        assert [p["id"] for p in (await client.get("/placements", headers=borough)).json()["placements"]] == [pid]

        # start
        assert problem(await client.post(f"/placements/{pid}/start", json={"started_on": "2026-13-01"},
                                         headers=own), 422) == ("started_on", "format")
        assert problem(await client.post(f"/placements/{pid}/start",
                                         json={"started_on": (TODAY + timedelta(days=3)).isoformat()}, headers=own),
                       422) == ("started_on", "not_future")
        started_on = TODAY - timedelta(days=20)
        r = await client.post(f"/placements/{pid}/start", json={"started_on": started_on.isoformat()}, headers=own)
        assert r.status_code == 200 and r.json()["status"] == "active"
        assert problem(await client.post(f"/placements/{pid}/start", json={"started_on": started_on.isoformat()},
                                         headers=own), 409) == ("status", "state")

        # funding
        def funding(edu: int, care: int, **dates: str) -> dict[str, Any]:
            return {"contributions": [{"stream": "education", "weekly_pence": edu},
                                      {"stream": "social_care", "weekly_pence": care},
                                      {"stream": "health", "weekly_pence": 420000 - edu - care, "icb_code": "QKK"}],
                    "agreed_from": started_on.isoformat(),
                    "agreed_until": dates.get("until", (started_on + timedelta(days=365)).isoformat()),
                    "review_due": dates.get("due", (TODAY + timedelta(days=10)).isoformat())}
        bad = funding(200000, 100000)
        bad["contributions"][2]["weekly_pence"] = 1
        assert problem(await client.post(f"/placements/{pid}/funding", json=bad, headers=borough),
                       422) == ("contributions", "sum_to_fee")
        bad = funding(200000, 100000)
        bad["contributions"][0]["icb_code"] = "QKK"
        assert problem(await client.post(f"/placements/{pid}/funding", json=bad, headers=borough),
                       422) == ("contributions.0.icb_code", "health_only")
        bad = funding(200000, 100000)
        bad["contributions"][2]["icb_code"] = "not an icb"
        assert problem(await client.post(f"/placements/{pid}/funding", json=bad, headers=borough),
                       422) == ("contributions.2.icb_code", "format")
        assert problem(await client.post(f"/placements/{pid}/funding", json=funding(200000, 100000), headers=own),
                       403)[0] == "Authorization"
        assert problem(await client.post(f"/placements/{pid}/funding", json=funding(200000, 100000, until="2020-01-01"),
                                         headers=borough), 422) == ("agreed_until", "after_agreed_from")
        r = await client.post(f"/placements/{pid}/funding", json=funding(200000, 100000), headers=borough)
        assert r.status_code == 200 and r.json()["funding"]["decision"] == "agreed" and r.json()["funding_balanced"]
        assert problem(await client.post(f"/placements/{pid}/funding", json=funding(200000, 100000), headers=borough),
                       409)[1] == "unchanged"
        commissioner = auth(settings, "commissioner", "region")
        r = await client.post(f"/placements/{pid}/funding", json=funding(
            200000, 100000, until=(started_on + timedelta(days=500)).isoformat()), headers=commissioner)
        assert r.json()["funding"]["decision"] == "extended" and len(r.json()["funding_history"]) == 2
        assert r.json()["funding"]["contributions"][1] == {"stream": "health", "weekly_pence": 120000,
                                                           "icb_code": "QKK"}

        # reviews due within 14 days: listed, noticed once per due date
        due = (await client.get("/placements/reviews-due", headers=borough)).json()["reviews"]
        assert [(d["placement_id"], d["overdue"], d["days_left"]) for d in due] == [(pid, False, 10)]
        assert (await client.get("/placements/reviews-due", headers=other_borough)).json()["reviews"] == []
        assert (await client.get("/placements/reviews-due?within_days=5", headers=borough)).json()["reviews"] == []
        assert await service.notice_reviews_due(app.state.runtime) == 1
        assert await service.notice_reviews_due(app.state.runtime) == 0

        # review: every outcome rated, needs re-scored
        ratings = [{"outcome": OUTCOMES[0], "progress": "progressing", "note": "4 days a week now"},
                   {"outcome": OUTCOMES[1], "progress": "achieved"}]
        better = {**NEEDS, "voice": 1, "self_regulation": 1}
        body = {"reviewed_on": TODAY.isoformat(), "outcomes": ratings[:1], "needs_profile": better, "continues": True,
                "next_review_due": (TODAY + timedelta(days=180)).isoformat()}
        assert problem(await client.post(f"/placements/{pid}/reviews", json=body, headers=borough),
                       422) == ("outcomes", "every_outcome")
        assert problem(await client.post(f"/placements/{pid}/reviews", json={**body, "outcomes": [
            *ratings, {"outcome": "Something else", "progress": "achieved"}]}, headers=borough),
            422) == ("outcomes.2.outcome", "known_outcome")
        assert problem(await client.post(f"/placements/{pid}/reviews", json={
            **body, "outcomes": ratings, "needs_profile": {**better, "voice": 4}}, headers=borough),
            422) == ("needs_profile.voice", "range")
        assert problem(await client.post(f"/placements/{pid}/reviews", json={
            **body, "outcomes": ratings, "needs_profile": {"voice": 1}}, headers=borough), 422)[1] == "required"
        assert problem(await client.post(f"/placements/{pid}/reviews", json={**body, "outcomes": ratings},
                                         headers=own), 403)[0] == "Authorization"
        r = await client.post(f"/placements/{pid}/reviews", json={**body, "outcomes": ratings}, headers=borough)
        assert r.status_code == 201, r.text
        view = r.json()
        assert [o["progress"] for o in view["outcomes"]] == ["progressing", "achieved"]
        assert [n["source"] for n in view["needs_over_time"]] == ["referral", "review"]
        assert view["distance_travelled"]["voice"] == -1 and view["distance_travelled"]["identity"] == 0
        assert view["review_due"] == body["next_review_due"]
        assert (await client.get("/placements/reviews-due", headers=borough)).json()["reviews"] == []

        # fee change: the provider asks, the borough agrees in part
        uplift_from = TODAY - timedelta(days=6)
        ask = {"weekly_fee_pence": 441000, "effective_from": uplift_from.isoformat(), "reason": "Annual uplift (CPI)"}
        assert problem(await client.post(f"/placements/{pid}/fee-changes", json=ask, headers=borough), 403)
        assert problem(await client.post(f"/placements/{pid}/fee-changes", json={**ask, "weekly_fee_pence": 420000},
                                         headers=own), 422) == ("weekly_fee_pence", "changed")
        r = await client.post(f"/placements/{pid}/fee-changes", json=ask, headers=own)
        assert r.status_code == 201
        change_id = r.json()["fee_changes"][0]["change_id"]
        assert problem(await client.post(f"/placements/{pid}/fee-changes", json=ask, headers=own),
                       409)[1] == "pending_fee_change"
        decide = f"/placements/{pid}/fee-changes/{change_id}/decision"
        assert problem(await client.post(decide, json={"decision": "agreed_in_part", "weekly_fee_pence": 450000,
                                                       "note": "x"}, headers=borough), 422) == ("weekly_fee_pence",
                                                                                                "between")
        assert problem(await client.post(f"/placements/{pid}/fee-changes/nope/decision",
                                         json={"decision": "declined", "note": "no"}, headers=borough),
                       404)[0] == "change_id"
        r = await client.post(decide, json={"decision": "agreed_in_part", "weekly_fee_pence": 430500,
                                            "note": "2.5% agreed by panel"}, headers=borough)
        assert r.status_code == 200 and r.json()["weekly_fee_pence"] == 430500
        assert [f["weekly_fee_pence"] for f in r.json()["fee_history"]] == [420000, 430500]
        assert not r.json()["funding_balanced"]  # the panel must fund the new fee
        assert problem(await client.post(decide, json={"decision": "declined", "note": "no"}, headers=borough),
                       409)[1] == "decided"

        # spend: 14 days at 420000/7 and 6 days at 430500/7 up to yesterday... to today inclusive
        r = await client.get(f"/placements/spend?from={started_on.isoformat()}&to={TODAY.isoformat()}",
                             headers=borough)
        expected = round((14 * 420000 + 7 * 430500) / 7)
        assert r.status_code == 200 and r.json()["total_pence"] == expected
        assert r.json()["by_borough"] == [{"borough": "croydon", "spend_pence": expected}]
        assert {s["stream"] for s in r.json()["by_stream"]} == {"education", "social_care", "health"}
        assert sum(s["spend_pence"] for s in r.json()["by_stream"]) in (expected - 1, expected, expected + 1)
        assert (await client.get(f"/placements/spend?from={started_on}&to={TODAY}",
                                 headers=other_borough)).json()["total_pence"] == 0
        assert problem(await client.get(f"/placements/spend?from={TODAY}&to={started_on}", headers=borough),
                       422) == ("to", "after_from")
        assert problem(await client.get("/placements/spend?from=yesterday&to=2026-01-01", headers=borough),
                       422) == ("from", "format")
        assert problem(await client.get("/placements/spend?from=9999-12-30&to=9999-12-31", headers=borough),
                       422) == ("from", "plausible_date")

        # unplanned end
        end = {"ended_on": TODAY.isoformat(), "ending": "unplanned", "reason": "outcomes_met"}
        assert problem(await client.post(f"/placements/{pid}/end", json=end, headers=borough),
                       422) == ("reason", "reason_for_ending")
        assert problem(await client.post(f"/placements/{pid}/end", json={**end, "reason": "eaten"}, headers=borough),
                       422) == ("reason", "one_of")
        r = await client.post(f"/placements/{pid}/end", json={**end, "reason": "breakdown"}, headers=borough)
        assert r.status_code == 200 and r.json()["status"] == "ended"
        assert r.json()["ending"] == {"ending": "unplanned", "reason": "breakdown", "note": None, "days": 20}
        assert problem(await client.post(f"/placements/{pid}/end", json={**end, "reason": "breakdown"},
                                         headers=borough), 409)[1] == "state"
        assert problem(await client.post(f"/placements/{pid}/fee-changes", json=ask, headers=own), 409)[1] == "state"

        async def published() -> list[str]:
            types = [e.type for e in await topic_events(app, settings) if e.subject == pid]
            return types if "placement-ended" in types else []
        assert await wait_for(published) == [
            "placement-opened", "placement-started", "funding-agreed", "funding-agreed", "placement-review-due",
            "placement-reviewed", "fee-change-requested", "fee-change-decided", "placement-ended"]
        events = [e for e in await topic_events(app, settings) if e.subject == pid]
        assert all(e.data["borough"] == "croydon" and e.data["provider_id"] == provider for e in events)
        assert events[-1].data["reason"] == "breakdown" and events[-1].data["ending"] == "unplanned"

    # no child identity in the placement store, ever
    raw = (settings.data_dir / "placement.db").read_bytes()
    assert b"CR-2026-0042" not in raw and b"child_ref" not in raw and b"birth_date" not in raw


async def test_collapse_and_next_offer(settings: Settings) -> None:
    app = create_app(settings)
    rid, p1, p2, p3 = (str(uuid.uuid4()) for _ in range(4))
    borough, p1_token = auth(settings, "borough", "croydon"), auth(settings, "provider", p1)
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        await feed(app, settings, env("referral-raised", rid, REFERRAL, "referral"),
                   shortlist(rid, [("o1", p1, 400000), ("o2", p2, 410000), ("o3", p3, 420000)]),
                   award(rid, "o1", p1, 400000))
        pid = (await opened(app, client, settings, rid, "o1", p1))["id"]
        url = f"/placements/{pid}/collapse"
        base = {"reason": "provider_withdrew", "next": "award_next_offer"}
        assert problem(await client.post(url, json=base, headers=borough), 422) == ("next_offer_id", "required")
        assert problem(await client.post(url, json={**base, "next_offer_id": "o1"}, headers=borough),
                       422) == ("next_offer_id", "on_shortlist")
        assert problem(await client.post(url, json={**base, "next_offer_id": "o3"}, headers=borough),
                       422) == ("justification", "required_when_not_top")
        assert problem(await client.post(url, json={**base, "next": "none"}, headers=borough),
                       422) == ("next", "one_of")
        assert problem(await client.post(url, json={**base, "next_offer_id": "o3"}, headers=p1_token), 403)
        r = await client.post(url, json={**base, "next_offer_id": "o3", "justification": "Parental preference"},
                              headers=borough)
        assert r.status_code == 200 and r.json()["status"] == "collapsed"
        assert r.json()["collapse"]["top_remaining_offer_id"] == "o2" and r.json()["collapse"]["next_provider_id"] == p3
        seen_by_p1 = (await client.get(f"/placements/{pid}", headers=p1_token)).json()["collapse"]
        assert "next_provider_id" not in seen_by_p1 and seen_by_p1["reason"] == "provider_withdrew"
        assert problem(await client.post(f"/placements/{pid}/start", json={"started_on": TODAY.isoformat()},
                                         headers=borough), 409)[1] == "state"

        # the next award opens a placement of its own
        await feed(app, settings, award(rid, "o3", p3, 420000))
        nxt = await opened(app, client, settings, rid, "o3", p3)
        assert nxt["id"] != pid and nxt["provider_id"] == p3 and nxt["status"] == "awarded"
        listed = (await client.get(f"/placements?referral_id={rid}", headers=borough)).json()["placements"]
        assert {p["status"] for p in listed} == {"collapsed", "awarded"}
        # a started placement cannot collapse
        await client.post(f"/placements/{nxt['id']}/start", json={"started_on": TODAY.isoformat()}, headers=borough)
        assert problem(await client.post(f"/placements/{nxt['id']}/collapse", json={"reason": "start_failed",
                                                                                    "next": "reopen"},
                                         headers=borough), 409)[1] == "started"

        async def collapsed() -> Any:
            return [e for e in await topic_events(app, settings) if e.type == "award-collapsed"]
        event = (await wait_for(collapsed))[0]
        assert event.data["next"] == "award_next_offer" and event.data["next_offer_id"] == "o3"
        assert event.data["referral_id"] == rid and event.data["justification"] == "Parental preference"


async def test_off_framework_placement(settings: Settings) -> None:
    app = create_app(settings)
    borough = auth(settings, "borough", "lambeth")
    body = {"provider_name": "St Anne's Tribunal-Named School", "weekly_fee_pence": 510000,
            "planned_start": TODAY.isoformat(), "primary_need": "SEMH", "placement_type": "day",
            "outcomes": ["Return to mainstream"], "needs_profile": NEEDS, "reason": "tribunal_named",
            "note": "Tribunal order 2026-06-12"}
    async with service_client(app) as client:
        assert problem(await client.post("/placements", json=body, headers=auth(settings, "provider", "p1")), 403)
        assert problem(await client.post("/placements", json={**body, "colour": "red"}, headers=borough),
                       422) == ("colour", "extra_forbidden")
        assert problem(await client.post("/placements", json={**body, "provider_name": None}, headers=borough),
                       422) == ("provider_name", "required")
        assert problem(await client.post("/placements", json={**body, "reason": "other", "note": " \u200b "},
                                         headers=borough), 422) == ("note", "required")
        assert problem(await client.post("/placements", json={**body, "weekly_fee_pence": 0}, headers=borough),
                       422) == ("weekly_fee_pence", "range")
        assert problem(await client.post("/placements", json={**body, "planned_start": "1900-01-01"},
                                         headers=borough), 422) == ("planned_start", "plausible_date")
        assert problem(await client.post("/placements", json={**body, "outcomes": ["a", "a"]}, headers=borough),
                       422) == ("outcomes", "unique")
        assert problem(await client.post("/placements", json={**body, "needs_profile": {**NEEDS, "mood": 1}},
                                         headers=borough), 422) == ("needs_profile.mood", "unknown_indicator")
        r = await client.post("/placements", json=body, headers=borough)
        assert r.status_code == 201, r.text
        view = r.json()
        assert view["off_framework"] and view["off_framework_reason"] == "tribunal_named"
        assert view["borough"] == "lambeth" and view["provider_name"] == body["provider_name"]
        croydon = auth(settings, "borough", "croydon")
        assert (await client.get(f"/placements/{view['id']}", headers=croydon)).status_code == 404
        r = await client.post(f"/placements/{view['id']}/collapse", json={"reason": "start_failed", "next": "reopen"},
                              headers=borough)
        assert problem(r, 422) == ("next", "off_framework")
        week_ago, month_ago = TODAY - timedelta(days=7), TODAY - timedelta(days=30)
        await client.post(f"/placements/{view['id']}/start", json={"started_on": str(week_ago)}, headers=borough)
        spent = (await client.get(f"/placements/spend?from={month_ago}&to={TODAY - timedelta(days=1)}",
                                  headers=borough)).json()
        assert spent["total_pence"] == 510000 and spent["by_framework"] == [{"framework": "off_framework",
                                                                             "spend_pence": 510000}]
        assert spent["by_stream"] == [{"stream": "unfunded", "spend_pence": 510000}]
        assert (await client.get("/placements/not-a-placement", headers=borough)).status_code == 404
        assert problem(await client.get("/placements?status=open", headers=borough), 422) == ("status", "format")
        assert problem(await client.get("/placements/reviews-due?within_days=-1", headers=borough),
                       422) == ("within_days", "range")
        assert (await client.get("/placements")).status_code == 401
        schema = (await client.get("/openapi.json")).json()
        assert {"/placements", "/placements/{placement_id}/fee-changes/{change_id}/decision",
                "/placements/spend", "/placements/reviews-due"} <= set(schema["paths"])


async def test_the_background_task_notices_reviews_due_once(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05, placement_review_check_seconds=0.05)
    app = create_app(settings)
    rid, provider = str(uuid.uuid4()), str(uuid.uuid4())
    borough = auth(settings, "borough", "croydon")
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        await feed(app, settings, env("referral-raised", rid, REFERRAL, "referral"), award(rid, "o1", provider))
        pid = (await opened(app, client, settings, rid, "o1", provider))["id"]
        r = await client.post(f"/placements/{pid}/start", json={"started_on": str(TODAY - timedelta(days=20))},
                              headers=borough)
        assert r.status_code == 200, r.text
        r = await client.post(f"/placements/{pid}/funding", headers=borough, json={
            "contributions": [{"stream": "education", "weekly_pence": 420000}],
            "agreed_from": str(TODAY - timedelta(days=20)), "agreed_until": str(TODAY + timedelta(days=100)),
            "review_due": str(TODAY - timedelta(days=2))})
        assert r.status_code == 200, r.text

        async def noticed() -> list[Envelope]:
            return [e for e in await topic_events(app, settings) if e.type == "placement-review-due"]
        first = (await wait_for(noticed))[0]
        assert first.data["overdue"] is True and first.data["review_due"] == str(TODAY - timedelta(days=2))
        assert first.actor is None  # the service's own doing, not a caller's
        due = (await client.get("/placements/reviews-due", headers=borough)).json()["reviews"]
        assert due[0]["overdue"] and due[0]["days_left"] == -2
        # the task keeps running; several more rounds add no second notice for that date
        for _ in range(3):
            assert await service.notice_reviews_due(app.state.runtime) == 0
        assert len(await noticed()) == 1
        view = (await client.get(f"/placements/{pid}", headers=borough)).json()
        assert view["review_notices"] == [{"review_due": str(TODAY - timedelta(days=2)), "noticed_on": str(TODAY),
                                           "overdue": True}]


async def test_a_retried_keyed_request_records_one_placement(settings: Settings) -> None:
    app = create_app(settings)
    borough = {**auth(settings, "borough", "lambeth"), "Idempotency-Key": "off-1"}
    body = {"provider_name": "Named School", "weekly_fee_pence": 200000, "planned_start": str(TODAY),
            "needs_profile": NEEDS, "reason": "parental_preference"}
    async with service_client(app) as client:
        first = await client.post("/placements", json=body, headers=borough)
        again = await client.post("/placements", json=body, headers=borough)
        assert first.status_code == again.status_code == 201 and first.json() == again.json()
        listed = (await client.get("/placements", headers=borough)).json()["placements"]
        assert [p["id"] for p in listed] == [first.json()["id"]]
        other = await client.post("/placements", json={**body, "weekly_fee_pence": 1}, headers=borough)
        assert problem(other, 422)[0] == "Idempotency-Key"
