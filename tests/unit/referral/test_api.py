"""HTTP contract of the referral service on SQLite + the local bus (no Kafka).

Tenancy tests: one per rule, each fails if its rule is broken.
"""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.referral.app import create_app
from services.referral.deadlines import close_due
from services.referral.settings import ReferralSettings
from shared.bus import Message
from shared.events import Envelope
from shared.settings import Settings
from shared.testing import auth, service_client
from tests.helpers import forged_token, wait_for

PROVIDER_A = "0d1f6c9e-6f0a-4f1e-8a55-0f1d9b7e2a01"
PROVIDER_B = "0d1f6c9e-6f0a-4f1e-8a55-0f1d9b7e2a02"
PROVIDER_C = "0d1f6c9e-6f0a-4f1e-8a55-0f1d9b7e2a03"


def today() -> datetime:
    return datetime.now(UTC)


def referral_body(**overrides: Any) -> dict[str, Any]:
    now = today()
    body: dict[str, Any] = {
        "child_ref": "CR-2026-0042",
        "birth_date": "2014-05-02",
        "gender": "male",
        "primary_need": "ASD",
        "secondary_needs": ["SLCN"],
        "placement_type": "day",
        "required_from": (now + timedelta(days=90)).date().isoformat(),
        "location": {"postcode": "CR0 1NX", "lat": 51.372, "lon": -0.099},
        "max_travel_km": 30,
        "offer_deadline": (now + timedelta(days=30)).strftime("%Y-%m-%dT17:00:00Z"),
        "preferred_provider_id": PROVIDER_C,
        "needs_profile": {
            "physical_health": 0, "emotional_health": 2, "relationships": 1, "risk_taking": 0,
            "learning_disability": 2, "educational_progress": 2, "self_regulation": 3,
            "community_engagement": 1, "self_care": 1, "goals_and_aspirations": 1, "voice": 2, "identity": 1,
        },
        "outcomes": ["Attend school full time by spring term", "Use a communication aid at home"],
    }
    body.update(overrides)
    return body


def offer_body(**overrides: Any) -> dict[str, Any]:
    body = {"weekly_fee_pence": 425000, "start_date": (today() + timedelta(days=90)).date().isoformat(),
            "notes": "Place in our ASD unit"}
    body.update(overrides)
    return body


class Harness:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient, settings: Settings) -> None:
        self.app = app
        self.client = client
        self.settings = settings
        self.runtime = app.state.runtime

    def as_(self, role: str, tenant: str) -> dict[str, str]:
        return auth(self.settings, role, tenant)

    async def raise_referral(self, borough: str = "croydon", **overrides: Any) -> dict[str, Any]:
        response = await self.client.post("/referrals", json=referral_body(**overrides),
                                          headers=self.as_("borough", borough))
        assert response.status_code == 201, response.text
        return response.json()

    async def feed(self, topic: str, type_: str, subject: str, data: dict[str, Any], source: str) -> None:
        """Publish a consumed event on the local bus and wait until the consumer has processed it."""
        consumer = self.runtime.consumers[0]
        before = consumer.handled
        envelope = Envelope(type=type_, subject=subject, data=data, source=source)
        await self.runtime.bus.publish([Message(self.settings.topic(topic), subject, envelope.to_json())])
        await wait_for(lambda: consumer.handled > before, message=f"{type_} processed")

    async def invite(self, referral_id: str, *providers: str, borough: str = "croydon") -> None:
        await self.feed("matching", "referral-matched", referral_id, {
            "referral_id": referral_id, "borough": borough, "invited": sorted(providers),
            "newly_invited": sorted(providers), "results": [], "trigger": "referral-raised",
        }, "placematch/matching")

    async def rank(self, referral_id: str, *offers: tuple[str, str],
                   excluded: list[dict[str, Any]] | None = None) -> None:
        entries = [{"rank": i + 1, "offer_id": o, "provider_id": p, "weekly_fee_pence": 425000,
                    "quality": "80.00", "price": "100.00", "score": "88.00"} for i, (o, p) in enumerate(offers)]
        await self.feed("matching", "shortlist-ranked", referral_id, {
            "referral_id": referral_id, "borough": "croydon", "policy_version": 1, "entries": entries,
            "excluded": excluded or [],
        }, "placematch/matching")

    async def offer(self, referral_id: str, provider: str, **overrides: Any) -> httpx.Response:
        return await self.client.post(f"/referrals/{referral_id}/offers", json=offer_body(**overrides),
                                      headers=self.as_("provider", provider))

    async def stream(self, referral_id: str) -> list[str]:
        return [e.type for e in await self.runtime.store.read_stream(referral_id)]

    async def all_events(self) -> list[str]:
        return [e.type for e in await self.runtime.store.read_all()]


@pytest.fixture
def settings(tmp_path: Any) -> ReferralSettings:
    return ReferralSettings(data_dir=tmp_path, relay_poll_seconds=0.05, deadline_check_seconds=0.1,
                    consumer_retry_base_seconds=0.01)


@pytest.fixture
async def h(settings: Settings) -> AsyncIterator[Harness]:
    app = create_app(settings)
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        yield Harness(app, client, settings)


# --- raising and validation --------------------------------------------------------------------


async def test_raise_returns_201_and_publishes_referral_raised(h: Harness) -> None:
    created = await h.raise_referral()
    assert created["status"] == "open" and uuid.UUID(created["id"])
    assert created["child_ref"] == "CR-2026-0042" and created["borough"] == "croydon"
    assert created["location"]["district"] == "CR0" and created["age_at_start"] >= 12

    async def published() -> list[Envelope]:
        messages = await h.runtime.bus.read_topic(h.settings.topic("referral"))
        return [Envelope.from_json(m.value) for m in messages]

    events = await wait_for(published)
    assert [(e.type, e.subject, e.source) for e in events] == [
        ("referral-raised", created["id"], "placematch/referral")]
    assert events[0].actor == "borough:croydon" and events[0].data["age_at_start"] == created["age_at_start"]


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        ({"primary_need": "XYZ"}, "primary_need", "need_code"),
        ({"child_ref": "Jane Smith"}, "child_ref", "pseudonymous"),
        ({"birth_date": "2014-13-01"}, "birth_date", "format"),
        ({"offer_deadline": "2020-01-01T00:00:00Z"}, "offer_deadline", "in_future"),
        ({"location": {"postcode": "NOWHERE"}}, "location.postcode", "format"),
        ({"max_travel_km": "30"}, "max_travel_km", "int_type"),
        ({"surname": "Smith"}, "surname", "extra_forbidden"),
        ({"outcomes": []}, "outcomes", "not_empty"),
        # issue 12: accepted, or refused naming another field, before
        ({"required_from": "9999-12-31"}, "required_from", "range"),
        ({"outcomes": ["\u200b\u2060"]}, "outcomes.0", "not_empty"),
        ({"outcomes": ["Attend\u0000"]}, "outcomes.0", "nul_character"),
        ({"offer_deadline": "9999-12-31T10:00:00Z"}, "offer_deadline", "before_required_from"),
    ],
)
async def test_bad_referral_is_422_problem_naming_field_and_rule_and_records_nothing(
    h: Harness, overrides: dict[str, Any], field: str, rule: str
) -> None:
    response = await h.client.post("/referrals", json=referral_body(**overrides), headers=h.as_("borough", "croydon"))
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["field"] == field and problem["rule"] == rule and problem["detail"]
    assert await h.all_events() == []


def _days(days: int) -> str:
    return (today() + timedelta(days=days)).date().isoformat()


def _profile(**changes: Any) -> dict[str, Any]:
    profile = dict(referral_body()["needs_profile"])
    for name, value in changes.items():
        if value is None:
            del profile[name]
        else:
            profile[name] = value
    return profile


# Every refusal of a referral's content as the wire gave it before the request models were typed
# (recorded against the service as it was; the domain's own rules named the same field and rule).
RAISE_REFUSALS = [
    ({"child_ref": None}, "child_ref", "string_type"),
    ({"child_ref": 42}, "child_ref", "string_type"),
    ({"child_ref": ""}, "child_ref", "not_empty"),
    ({"child_ref": "\u200b"}, "child_ref", "not_empty"),
    ({"child_ref": "x" * 65}, "child_ref", "max_length"),
    ({"child_ref": "9434765919"}, "child_ref", "pseudonymous"),
    ({"child_ref": "943 476 5919"}, "child_ref", "pseudonymous"),
    ({"child_ref": "-CR1"}, "child_ref", "pseudonymous"),
    ({"birth_date": "02/05/2014"}, "birth_date", "format"),
    ({"birth_date": "2014-02-30"}, "birth_date", "format"),
    ({"birth_date": "2014-05-02T00:00:00"}, "birth_date", "format"),
    ({"birth_date": "20140502"}, "birth_date", "format"),
    ({"birth_date": 20140502}, "birth_date", "string_type"),
    ({"birth_date": None}, "birth_date", "string_type"),
    ({"birth_date": "2099-01-01"}, "birth_date", "not_in_future"),
    ({"birth_date": "1990-01-01"}, "birth_date", "age_range"),
    ({"gender": "robot"}, "gender", "one_of"),
    ({"gender": "MALE"}, "gender", "one_of"),
    ({"gender": " "}, "gender", "not_empty"),
    ({"gender": "x" * 65}, "gender", "max_length"),
    ({"gender": 1}, "gender", "string_type"),
    ({"primary_need": "asd"}, "primary_need", "need_code"),
    ({"primary_need": None}, "primary_need", "string_type"),
    ({"primary_need": ""}, "primary_need", "not_empty"),
    ({"secondary_needs": ["SLCN", "BAD"]}, "secondary_needs.1", "need_code"),
    ({"secondary_needs": ["TOOLONGCODE"]}, "secondary_needs.0", "max_length"),
    ({"secondary_needs": [""]}, "secondary_needs.0", "not_empty"),
    ({"secondary_needs": [1]}, "secondary_needs.0", "string_type"),
    ({"secondary_needs": ["SLCN", "SLCN"]}, "secondary_needs", "unique"),
    ({"secondary_needs": ["ASD"]}, "secondary_needs", "not_primary"),
    ({"secondary_needs": "SLCN"}, "secondary_needs", "list_type"),
    ({"secondary_needs": None}, "secondary_needs", "list_type"),
    ({"placement_type": "boarding"}, "placement_type", "one_of"),
    ({"required_from": _days(-1)}, "required_from", "not_in_past"),
    ({"required_from": _days(5 * 366)}, "required_from", "range"),
    ({"required_from": "bad"}, "required_from", "format"),
    ({"location": {"postcode": "NOWHERE"}}, "location.postcode", "format"),
    ({"location": {"postcode": " "}}, "location.postcode", "not_empty"),
    ({"location": {"postcode": "x" * 11}}, "location.postcode", "max_length"),
    ({"location": {"postcode": None}}, "location.postcode", "string_type"),
    ({"location": {"lat": 51.3, "lon": -0.1}}, "location.postcode", "missing"),
    ({"location": {"postcode": "CR0 1NX", "lat": 51.3}}, "location.lon", "required"),
    ({"location": {"postcode": "CR0 1NX", "lon": 0.1}}, "location.lat", "required"),
    ({"location": {"postcode": "CR0 1NX", "lat": 91, "lon": 0}}, "location.lat", "range"),
    ({"location": {"postcode": "CR0 1NX", "lat": 51, "lon": 200}}, "location.lon", "range"),
    ({"location": {"postcode": "CR0 1NX", "lat": True, "lon": 0}}, "location.lat", "float_type"),
    ({"location": {"postcode": "CR0 1NX", "street": "High St"}}, "location.street", "extra_forbidden"),
    ({"location": {"postcode": "CR0 1NX", "district": "CR0"}}, "location.district", "extra_forbidden"),
    ({"location": "CR0 1NX"}, "location", "model_attributes_type"),
    ({"max_travel_km": 0}, "max_travel_km", "range"),
    ({"max_travel_km": 501}, "max_travel_km", "range"),
    ({"max_travel_km": "far"}, "max_travel_km", "int_type"),
    ({"max_travel_km": True}, "max_travel_km", "int_type"),
    ({"max_travel_km": 30.0}, "max_travel_km", "int_type"),
    ({"needs_profile": _profile(voice=None)}, "needs_profile.voice", "missing"),
    ({"needs_profile": _profile(voice=4)}, "needs_profile.voice", "range"),
    ({"needs_profile": _profile(voice=-1)}, "needs_profile.voice", "range"),
    ({"needs_profile": _profile(voice="high")}, "needs_profile.voice", "int_type"),
    ({"needs_profile": _profile(voice=1.5)}, "needs_profile.voice", "int_type"),
    ({"needs_profile": _profile(mood=1)}, "needs_profile.mood", "extra_forbidden"),
    ({"needs_profile": "x"}, "needs_profile", "model_attributes_type"),
    ({"outcomes": ["ok", ""]}, "outcomes.1", "not_empty"),
    ({"outcomes": ["x"] * 21}, "outcomes", "max_items"),
    ({"outcomes": ["x" * 501]}, "outcomes.0", "max_length"),
    ({"outcomes": "be happy"}, "outcomes", "list_type"),
    ({"outcomes": [1]}, "outcomes.0", "string_type"),
    ({"offer_deadline": "2026-07-01T17:00:00"}, "offer_deadline", "timezone"),
    ({"offer_deadline": "2026-07-01"}, "offer_deadline", "timezone"),
    ({"offer_deadline": "soon"}, "offer_deadline", "format"),
    ({"offer_deadline": ""}, "offer_deadline", "format"),
    ({"offer_deadline": 1400000000}, "offer_deadline", "string_type"),
    ({"offer_deadline": "9999-12-31T23:00:00-05:00"}, "offer_deadline", "range"),
    ({"offer_deadline": "0001-01-01T00:00:00+01:00"}, "offer_deadline", "range"),
    ({"preferred_provider_id": "riverside"}, "preferred_provider_id", "format"),
    ({"preferred_provider_id": PROVIDER_A.replace("-", "")}, "preferred_provider_id", "format"),
    ({"preferred_provider_id": "{" + PROVIDER_A + "}"}, "preferred_provider_id", "format"),
    ({"preferred_provider_id": 5}, "preferred_provider_id", "string_type"),
    ({"nickname": "Jo"}, "nickname", "extra_forbidden"),
]


@pytest.mark.parametrize(("overrides", "field", "rule"), RAISE_REFUSALS)
async def test_every_refusal_of_a_referral_names_the_field_and_rule_it_always_did(
        h: Harness, overrides: dict[str, Any], field: str, rule: str) -> None:
    response = await h.client.post("/referrals", json=referral_body(**overrides), headers=h.as_("borough", "croydon"))
    assert response.status_code == 422, response.text
    assert (response.json()["field"], response.json()["rule"]) == (field, rule)
    assert await h.all_events() == []


@pytest.mark.parametrize(("overrides", "stored"), [
    ({"location": {"postcode": " sw1a  1aa"}}, {"location": {"postcode": "SW1A 1AA", "lat": None, "lon": None,
                                                                 "district": "SW1A"}}),
    ({"outcomes": [" padded\u200b "]}, {"outcomes": ["padded"]}),
    ({"preferred_provider_id": PROVIDER_A.upper()}, {"preferred_provider_id": PROVIDER_A}),
    ({"birth_date": "2014-W18-5"}, {"birth_date": "2014-05-02"}),
    ({"offer_deadline": (today() + timedelta(days=30)).strftime("%Y-%m-%dT17:00:00.5+01:00")},
     {"offer_deadline": (today() + timedelta(days=30)).strftime("%Y-%m-%dT16:00:00Z")}),
    ({"secondary_needs": [], "location": None, "max_travel_km": None, "preferred_provider_id": None},
     {"secondary_needs": [], "location": None, "max_travel_km": None, "preferred_provider_id": None}),
])
async def test_accepted_forms_are_stored_normalised(h: Harness, overrides: dict[str, Any],
                                                    stored: dict[str, Any]) -> None:
    created = await h.raise_referral(**overrides)
    assert {k: created[k] for k in stored} == stored
    event = (await h.runtime.store.read_stream(created["id"]))[0]
    assert {k: event.data[k] for k in stored} == stored


@pytest.mark.parametrize(("changes", "field", "rule"), [
    ({}, "body", "not_empty"),
    ({"gender": "male"}, "body", "no_changes"),
    ({"primary_need": "SLCN"}, "secondary_needs", "not_primary"),
    *[({name: None}, name, "required") for name in ("child_ref", "birth_date", "gender", "primary_need",
                                                   "placement_type", "required_from", "needs_profile",
                                                   "outcomes", "offer_deadline")],
    ({"needs_profile": {"voice": 1}}, "needs_profile.physical_health", "missing"),
    ({"offer_deadline": "2020-01-01T00:00:00Z"}, "offer_deadline", "in_future"),
    ({"max_travel_km": 0}, "max_travel_km", "range"),
    ({"outcomes": []}, "outcomes", "not_empty"),
    ({"nickname": "x"}, "nickname", "extra_forbidden"),
])
async def test_amendment_refusals(h: Harness, changes: dict[str, Any], field: str, rule: str) -> None:
    rid = (await h.raise_referral())["id"]
    response = await h.client.post(f"/referrals/{rid}/amend", json=changes, headers=h.as_("borough", "croydon"))
    assert response.status_code == 422, response.text
    assert (response.json()["field"], response.json()["rule"]) == (field, rule)
    assert await h.stream(rid) == ["referral-raised"]


async def test_an_amendment_may_clear_optional_fields(h: Harness) -> None:
    rid = (await h.raise_referral())["id"]
    cleared = {"secondary_needs": None, "location": None, "max_travel_km": None, "preferred_provider_id": None}
    response = await h.client.post(f"/referrals/{rid}/amend", json=cleared, headers=h.as_("borough", "croydon"))
    assert response.status_code == 200, response.text
    assert {k: response.json()[k] for k in cleared} == {**cleared, "secondary_needs": []}


async def test_every_command_answers_what_reading_the_referral_then_gives_byte_for_byte(h: Harness) -> None:
    """Commands answer from the aggregate they changed (no read-back of the view): the same bytes."""
    borough = h.as_("borough", "croydon")

    async def answered_as_read(response: httpx.Response, rid: str) -> None:
        assert response.status_code in (200, 201), response.text
        assert response.content == (await h.client.get(f"/referrals/{rid}", headers=borough)).content

    created = await h.client.post("/referrals", json=referral_body(), headers=borough)
    rid = created.json()["id"]
    await answered_as_read(created, rid)
    await answered_as_read(await h.client.post(f"/referrals/{rid}/amend", json={"max_travel_km": 45,
                                               "outcomes": [" Settle at school "]}, headers=borough), rid)
    await h.invite(rid, PROVIDER_A, PROVIDER_B, PROVIDER_C)
    offer_a = (await h.offer(rid, PROVIDER_A)).json()
    offer_b = (await h.offer(rid, PROVIDER_B, weekly_fee_pence=399000)).json()
    decline = await h.client.post(f"/referrals/{rid}/decline", json={"reason": "other", "note": " Full "},
                                  headers=h.as_("provider", PROVIDER_C))
    assert decline.json() == {"referral_id": rid, "provider_id": PROVIDER_C, "reason": "other", "note": " Full "}
    await h.rank(rid, (offer_b["id"], PROVIDER_B), (offer_a["id"], PROVIDER_A))
    await answered_as_read(await h.client.post(f"/referrals/{rid}/award", json={
        "offer_id": offer_a["id"], "justification": " Parental preference "}, headers=borough), rid)
    await answered_as_read(await h.client.post(f"/referrals/{rid}/erase", headers=borough), rid)
    view = (await h.client.get(f"/referrals/{rid}", headers=borough)).json()
    assert view["justification"] == "Parental preference" and view["outcomes"] == ["Settle at school"]
    assert view["declines"] == [{"provider_id": PROVIDER_C, "reason": "other", "note": "Full"}]
    assert view["child_ref"] is None and [o["status"] for o in view["offers"]].count("awarded") == 1

    for ending in ("withdraw", "close"):
        other = (await h.raise_referral())["id"]
        await answered_as_read(await h.client.post(f"/referrals/{other}/{ending}", headers=borough), other)


async def test_the_openapi_document_carries_the_codes_and_formats(h: Harness) -> None:
    schemas = (await h.client.get("/openapi.json")).json()["components"]["schemas"]
    assert set(schemas["NeedCode"]["enum"]) == {"SPLD", "MLD", "SLD", "PMLD", "SEMH", "SLCN", "HI", "VI", "MSI",
                                                "PD", "ASD", "OTH"}
    assert schemas["Gender"]["enum"] == ["female", "male", "non_binary"]
    assert "residential_52" in schemas["PlacementType"]["enum"] and "other" in schemas["DeclineReason"]["enum"]
    fields = schemas["ReferralIn"]["properties"]
    assert fields["birth_date"]["format"] == "date" and fields["offer_deadline"]["format"] == "date-time"
    assert fields["child_ref"]["maxLength"] == 64 and fields["outcomes"]["maxItems"] == 20
    assert any(o.get("format") == "uuid" for o in fields["preferred_provider_id"]["anyOf"])
    assert schemas["NeedsProfileIn"]["properties"]["voice"] == {"type": "integer", "maximum": 3, "minimum": 0,
                                                                "title": "Voice"}


async def test_needs_profile_indicator_out_of_range_names_the_indicator(h: Harness) -> None:
    body = referral_body()
    body["needs_profile"]["voice"] = 7
    response = await h.client.post("/referrals", json=body, headers=h.as_("borough", "croydon"))
    assert response.status_code == 422
    assert (response.json()["field"], response.json()["rule"]) == ("needs_profile.voice", "range")


async def test_only_boroughs_raise_and_a_token_is_required(h: Harness) -> None:
    response = await h.client.post("/referrals", json=referral_body(), headers=h.as_("provider", PROVIDER_A))
    assert response.status_code == 403
    response = await h.client.post("/referrals", json=referral_body())
    assert response.status_code == 401
    assert await h.all_events() == []


# --- tenancy: one test per rule -----------------------------------------------------------------


async def test_tenancy_a_borough_lists_only_its_own_referrals(h: Harness) -> None:
    mine = await h.raise_referral("croydon")
    theirs = await h.raise_referral("lambeth", child_ref="LB-0001")
    listed = (await h.client.get("/referrals", headers=h.as_("borough", "croydon"))).json()["items"]
    assert [r["id"] for r in listed] == [mine["id"]]
    listed = (await h.client.get("/referrals", headers=h.as_("borough", "lambeth"))).json()["items"]
    assert [r["id"] for r in listed] == [theirs["id"]]


async def test_tenancy_another_boroughs_referral_is_404_not_403(h: Harness) -> None:
    theirs = await h.raise_referral("lambeth")
    croydon = h.as_("borough", "croydon")
    response = await h.client.get(f"/referrals/{theirs['id']}", headers=croydon)
    assert response.status_code == 404
    assert response.json()["status"] == 404
    for path, body in [("amend", {"max_travel_km": 10}), ("withdraw", {}), ("close", None),
                       ("award", {"offer_id": "x"})]:
        response = await h.client.post(f"/referrals/{theirs['id']}/{path}", json=body, headers=croydon)
        assert response.status_code == 404, path
    assert await h.stream(theirs["id"]) == ["referral-raised"]
    # and an unknown id looks exactly the same
    assert (await h.client.get(f"/referrals/{uuid.uuid4()}", headers=croydon)).status_code == 404


async def test_tenancy_an_invited_provider_reads_a_redacted_view(h: Harness) -> None:
    created = await h.raise_referral()
    await h.invite(created["id"], PROVIDER_A)
    response = await h.client.get(f"/referrals/{created['id']}", headers=h.as_("provider", PROVIDER_A))
    assert response.status_code == 200
    view = response.json()
    assert "child_ref" not in view and "birth_date" not in view and "preferred_provider_id" not in view
    assert "CR-2026-0042" not in response.text and "2014-05-02" not in response.text
    assert "CR0 1NX" not in response.text and "51.372" not in response.text
    assert view["location"] == {"district": "CR0"}
    assert view["age"] in (created["age_at_start"], created["age_at_start"] - 1)  # today vs at start
    assert view["primary_need"] == "ASD" and view["needs_profile"]["voice"] == 2 and view["redacted"] is True
    listed = (await h.client.get("/referrals", headers=h.as_("provider", PROVIDER_A))).json()["items"]
    assert [r["id"] for r in listed] == [created["id"]] and "child_ref" not in listed[0]


async def test_tenancy_a_provider_not_invited_cannot_read_or_list(h: Harness) -> None:
    created = await h.raise_referral()
    await h.invite(created["id"], PROVIDER_A)
    outsider = h.as_("provider", PROVIDER_B)
    assert (await h.client.get(f"/referrals/{created['id']}", headers=outsider)).status_code == 404
    assert (await h.client.get("/referrals", headers=outsider)).json()["items"] == []


async def test_tenancy_offers_are_visible_only_to_their_provider_and_the_owning_borough(h: Harness) -> None:
    created = await h.raise_referral()
    rid = created["id"]
    await h.invite(rid, PROVIDER_A, PROVIDER_B)
    offer_a = (await h.offer(rid, PROVIDER_A, weekly_fee_pence=425000)).json()
    offer_b = (await h.offer(rid, PROVIDER_B, weekly_fee_pence=399999)).json()

    for provider, own, rival in [(PROVIDER_A, offer_a, offer_b), (PROVIDER_B, offer_b, offer_a)]:
        headers = h.as_("provider", provider)
        for path in (f"/referrals/{rid}", f"/referrals/{rid}/offers", "/referrals"):
            response = await h.client.get(path, headers=headers)
            assert response.status_code == 200
            assert own["id"] in response.text
            assert rival["id"] not in response.text and str(rival["weekly_fee_pence"]) not in response.text

    borough = (await h.client.get(f"/referrals/{rid}/offers", headers=h.as_("borough", "croydon"))).json()
    assert {o["id"] for o in borough["offers"]} == {offer_a["id"], offer_b["id"]}
    other_borough = await h.client.get(f"/referrals/{rid}/offers", headers=h.as_("borough", "lambeth"))
    assert other_borough.status_code == 404


async def test_the_awarded_provider_sees_the_full_referral(h: Harness) -> None:
    created = await h.raise_referral()
    rid = created["id"]
    await h.invite(rid, PROVIDER_A)
    offer = (await h.offer(rid, PROVIDER_A)).json()
    await h.rank(rid, (offer["id"], PROVIDER_A))
    response = await h.client.post(f"/referrals/{rid}/award", json={"offer_id": offer["id"]},
                                   headers=h.as_("borough", "croydon"))
    assert response.status_code == 200, response.text
    view = (await h.client.get(f"/referrals/{rid}", headers=h.as_("provider", PROVIDER_A))).json()
    assert view["child_ref"] == "CR-2026-0042" and view["redacted"] is False
    assert view["offers"][0]["status"] == "awarded"


# --- offers -------------------------------------------------------------------------------------


async def test_offer_before_the_invitation_is_known_is_409_with_retry_after(h: Harness) -> None:
    created = await h.raise_referral()
    response = await h.offer(created["id"], PROVIDER_A)
    assert response.status_code == 409
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["rule"] == "invitation_pending"
    assert await h.stream(created["id"]) == ["referral-raised"]
    await h.invite(created["id"], PROVIDER_A)
    response = await h.offer(created["id"], PROVIDER_A)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "submitted"
    assert await h.stream(created["id"]) == ["referral-raised", "offer-submitted"]


async def test_offer_from_a_provider_not_invited_is_403(h: Harness) -> None:
    created = await h.raise_referral()
    await h.invite(created["id"], PROVIDER_A)
    response = await h.offer(created["id"], PROVIDER_B)
    assert response.status_code == 403 and response.json()["rule"] == "not_invited"
    assert await h.stream(created["id"]) == ["referral-raised"]


async def test_offer_from_a_suspended_provider_is_403_until_reinstated(h: Harness) -> None:
    created = await h.raise_referral()
    await h.invite(created["id"], PROVIDER_A)
    await h.feed("enrolment", "provider-suspended", PROVIDER_A, {"reason": "safeguarding", "automatic": True},
                 "placematch/enrolment")
    response = await h.offer(created["id"], PROVIDER_A)
    assert response.status_code == 403 and response.json()["rule"] == "provider_suspended"
    await h.feed("enrolment", "provider-reinstated", PROVIDER_A, {"name": "Riverside", "quality_score": "80.00"},
                 "placematch/enrolment")
    assert (await h.offer(created["id"], PROVIDER_A)).status_code == 201


async def test_offer_validation_names_the_field(h: Harness) -> None:
    created = await h.raise_referral()
    await h.invite(created["id"], PROVIDER_A)
    cases: list[tuple[dict[str, Any], str, str]] = [
                                   ({"weekly_fee_pence": 0}, "weekly_fee_pence", "range"),
                                   ({"weekly_fee_pence": -5}, "weekly_fee_pence", "range"),
                                   ({"weekly_fee_pence": 10_000_001}, "weekly_fee_pence", "range"),
                                   ({"weekly_fee_pence": None}, "weekly_fee_pence", "int_type"),
                                   ({"weekly_fee_pence": 4250.5}, "weekly_fee_pence", "int_type"),
                                   ({"weekly_fee_pence": True}, "weekly_fee_pence", "int_type"),
                                   ({"weekly_fee_pence": "425000"}, "weekly_fee_pence", "int_type"),
                                   ({"start_date": None}, "start_date", "string_type"),
                                   ({"start_date": "next week"}, "start_date", "format"),
                                   ({"notes": 12}, "notes", "string_type"),
                                   ({"notes": "x" * 2001}, "notes", "max_length"),
                                   ({"extra": 1}, "extra", "extra_forbidden"),
                                   ({"start_date": "2020-01-01"}, "start_date", "not_in_past"),
                                   # issue 12: accepted before
                                   ({"start_date": "9999-12-31"}, "start_date", "range"),
                                   ({"start_date": (today() + timedelta(days=6 * 366)).date().isoformat()},
                                    "start_date", "range")]
    for overrides, field, rule in cases:
        response = await h.offer(created["id"], PROVIDER_A, **overrides)
        assert response.status_code == 422
        assert (response.json()["field"], response.json()["rule"]) == (field, rule)
    assert await h.stream(created["id"]) == ["referral-raised"]


async def test_withdraw_offer_and_decline(h: Harness) -> None:
    created = await h.raise_referral()
    rid = created["id"]
    await h.invite(rid, PROVIDER_A, PROVIDER_B)
    offer = (await h.offer(rid, PROVIDER_A)).json()
    response = await h.client.post(f"/referrals/{rid}/offers/{offer['id']}/withdraw", json={"reason": "staffing"},
                                   headers=h.as_("provider", PROVIDER_B))
    assert response.status_code == 404  # not B's offer
    response = await h.client.post(f"/referrals/{rid}/offers/{offer['id']}/withdraw", json={"reason": "staffing"},
                                   headers=h.as_("provider", PROVIDER_A))
    assert response.status_code == 200 and response.json()["status"] == "withdrawn"
    response = await h.client.post(f"/referrals/{rid}/decline", json={"reason": "busy"},
                                   headers=h.as_("provider", PROVIDER_B))
    assert response.status_code == 422 and response.json()["field"] == "reason"
    response = await h.client.post(f"/referrals/{rid}/decline", json={"reason": "no_capacity"},
                                   headers=h.as_("provider", PROVIDER_B))
    assert response.status_code == 200
    response = await h.client.post(f"/referrals/{rid}/decline", json={"reason": "no_capacity"},
                                   headers=h.as_("provider", PROVIDER_C))
    assert response.status_code == 403
    assert await h.stream(rid) == ["referral-raised", "offer-submitted", "offer-withdrawn", "invitation-declined"]
    borough = (await h.client.get(f"/referrals/{rid}", headers=h.as_("borough", "croydon"))).json()
    assert borough["declines"] == [{"provider_id": PROVIDER_B, "reason": "no_capacity", "note": None}]
    assert borough["offers"][0]["status"] == "withdrawn"


@pytest.mark.parametrize(("body", "field", "rule"), [
    ({"reason": "busy"}, "reason", "one_of"),
    ({"reason": None}, "reason", "one_of"),
    ({"reason": 5}, "reason", "one_of"),
    ({"reason": "x" * 65}, "reason", "one_of"),
    ({}, "reason", "missing"),
    ({"reason": "other"}, "note", "required"),
    ({"reason": "other", "note": " "}, "note", "required"),
    ({"reason": "no_capacity", "note": "x" * 2001}, "note", "max_length"),
    ({"reason": "no_capacity", "note": 5}, "note", "string_type"),
])
async def test_decline_refusals(h: Harness, body: dict[str, Any], field: str, rule: str) -> None:
    rid = (await h.raise_referral())["id"]
    await h.invite(rid, PROVIDER_A)
    response = await h.client.post(f"/referrals/{rid}/decline", json=body, headers=h.as_("provider", PROVIDER_A))
    assert response.status_code == 422, response.text
    assert (response.json()["field"], response.json()["rule"]) == (field, rule)
    assert await h.stream(rid) == ["referral-raised"]


@pytest.mark.parametrize(("body", "field", "rule"), [
    ({}, "offer_id", "missing"),
    ({"offer_id": None}, "offer_id", "string_type"),
    ({"offer_id": 5}, "offer_id", "string_type"),
    ({"offer_id": " "}, "offer_id", "not_empty"),
    ({"offer_id": "x" * 65}, "offer_id", "max_length"),
    ({"offer_id": "no-such"}, "offer_id", "unknown_offer"),
    ({"offer_id": "A", "justification": 5}, "justification", "string_type"),
    ({"offer_id": "A", "justification": "x" * 4001}, "justification", "max_length"),
    ({"offer_id": "A", "justification": " \u200b "}, "justification", "required_when_not_top"),
])
async def test_award_refusals(h: Harness, body: dict[str, Any], field: str, rule: str) -> None:
    rid = (await h.raise_referral())["id"]
    await h.invite(rid, PROVIDER_A, PROVIDER_B)
    offer_a = (await h.offer(rid, PROVIDER_A)).json()["id"]
    offer_b = (await h.offer(rid, PROVIDER_B, weekly_fee_pence=399000)).json()["id"]
    await h.rank(rid, (offer_b, PROVIDER_B), (offer_a, PROVIDER_A))
    if body.get("offer_id") == "A":
        body = {**body, "offer_id": offer_a}
    response = await h.client.post(f"/referrals/{rid}/award", json=body, headers=h.as_("borough", "croydon"))
    assert response.status_code == 422, response.text
    assert (response.json()["field"], response.json()["rule"]) == (field, rule)
    assert "placement-awarded" not in await h.stream(rid)


@pytest.mark.parametrize(("body", "rule"), [({"reason": 5}, "string_type"), ({"reason": "x" * 2001}, "max_length")])
async def test_withdrawal_reasons_are_text(h: Harness, body: dict[str, Any], rule: str) -> None:
    rid = (await h.raise_referral())["id"]
    await h.invite(rid, PROVIDER_A)
    offer_id = (await h.offer(rid, PROVIDER_A)).json()["id"]
    for path, who in [(f"/referrals/{rid}/withdraw", h.as_("borough", "croydon")),
                      (f"/referrals/{rid}/offers/{offer_id}/withdraw", h.as_("provider", PROVIDER_A))]:
        response = await h.client.post(path, json=body, headers=who)
        assert response.status_code == 422 and (response.json()["field"], response.json()["rule"]) == ("reason", rule)
    assert await h.stream(rid) == ["referral-raised", "offer-submitted"]
    withdrawn = await h.client.post(f"/referrals/{rid}/withdraw", json={"reason": " moved \u200b"},
                                    headers=h.as_("borough", "croydon"))
    assert withdrawn.json()["withdrawal_reason"] == "moved"


# --- award --------------------------------------------------------------------------------------


async def test_award_other_than_top_needs_justification_and_records_it(h: Harness) -> None:
    created = await h.raise_referral()
    rid = created["id"]
    await h.invite(rid, PROVIDER_A, PROVIDER_B)
    offer_a = (await h.offer(rid, PROVIDER_A)).json()
    offer_b = (await h.offer(rid, PROVIDER_B, weekly_fee_pence=399000)).json()
    borough = h.as_("borough", "croydon")

    response = await h.client.post(f"/referrals/{rid}/award", json={"offer_id": offer_a["id"]}, headers=borough)
    assert response.status_code == 409 and "Retry-After" in response.headers  # not ranked yet

    await h.rank(rid, (offer_b["id"], PROVIDER_B), (offer_a["id"], PROVIDER_A))
    response = await h.client.post(f"/referrals/{rid}/award", json={"offer_id": offer_a["id"], "justification": " "},
                                   headers=borough)
    assert response.status_code == 422
    assert (response.json()["field"], response.json()["rule"]) == ("justification", "required_when_not_top")
    assert "placement-awarded" not in await h.stream(rid)

    response = await h.client.post(
        f"/referrals/{rid}/award",
        json={"offer_id": offer_a["id"], "justification": "Parental preference; tribunal order of 2026-06-12"},
        headers=borough)
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["status"] == "awarded" and view["awarded_offer_id"] == offer_a["id"]
    assert view["justification"].startswith("Parental preference")
    awarded = (await h.runtime.store.read_stream(rid))[-1]
    assert awarded.type == "placement-awarded"
    assert awarded.data["top_ranked_offer_id"] == offer_b["id"]
    assert awarded.data["not_selected"] == [{"offer_id": offer_b["id"], "provider_id": PROVIDER_B}]
    loser = (await h.client.get(f"/referrals/{rid}", headers=h.as_("provider", PROVIDER_B))).json()
    assert loser["status"] == "awarded" and loser["offers"][0]["status"] == "not_selected"
    assert "justification" not in loser and "child_ref" not in loser


# --- idempotency --------------------------------------------------------------------------------


async def test_a_retried_post_returns_the_first_response_and_records_one_event(h: Harness) -> None:
    headers = {**h.as_("borough", "croydon"), "Idempotency-Key": "raise-42"}
    first = await h.client.post("/referrals", json=referral_body(), headers=headers)
    second = await h.client.post("/referrals", json=referral_body(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert await h.all_events() == ["referral-raised"]

    rid = first.json()["id"]
    await h.invite(rid, PROVIDER_A)
    offer_headers = {**h.as_("provider", PROVIDER_A), "Idempotency-Key": "offer-1"}
    first = await h.client.post(f"/referrals/{rid}/offers", json=offer_body(), headers=offer_headers)
    second = await h.client.post(f"/referrals/{rid}/offers", json=offer_body(), headers=offer_headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert await h.stream(rid) == ["referral-raised", "offer-submitted"]


# --- lifecycle -----------------------------------------------------------------------------------


async def test_amend_withdraw_and_close(h: Harness) -> None:
    borough = h.as_("borough", "croydon")
    rid = (await h.raise_referral())["id"]
    response = await h.client.post(f"/referrals/{rid}/amend", json={"max_travel_km": 45}, headers=borough)
    assert response.status_code == 200 and response.json()["max_travel_km"] == 45
    response = await h.client.post(f"/referrals/{rid}/withdraw", json={"reason": "moved away"}, headers=borough)
    assert response.status_code == 200 and response.json()["status"] == "withdrawn"
    response = await h.client.post(f"/referrals/{rid}/close", headers=borough)
    assert response.status_code == 409
    other = (await h.raise_referral())["id"]
    response = await h.client.post(f"/referrals/{other}/close", headers=borough)
    assert response.status_code == 200 and response.json()["status"] == "closed"
    assert response.json()["close_reason"] == "by_borough"
    assert await h.stream(rid) == ["referral-raised", "referral-amended", "referral-withdrawn"]


# --- deadlines ----------------------------------------------------------------------------------


def _soon(seconds: float) -> str:
    return (today() + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_the_service_closes_a_referral_whose_deadline_passes_without_offers(h: Harness) -> None:
    rid = (await h.raise_referral(offer_deadline=_soon(2)))["id"]
    with_offer = (await h.raise_referral(offer_deadline=_soon(2)))["id"]
    await h.invite(with_offer, PROVIDER_A)
    assert (await h.offer(with_offer, PROVIDER_A)).status_code == 201

    async def closed() -> bool:
        return await h.stream(rid) == ["referral-raised", "referral-closed"]

    await wait_for(closed, timeout=15)
    event = (await h.runtime.store.read_stream(rid))[-1]
    assert event.data == {"reason": "unfilled", "unfilled": True, "borough": "croydon"}
    assert event.actor == "system:referral"
    assert await h.stream(with_offer) == ["referral-raised", "offer-submitted"]
    assert await close_due(h.runtime, today()) == []  # a second pass changes nothing


async def test_deadlines_that_pass_while_the_service_is_down_are_closed_after_restart(settings: Settings) -> None:
    settings = settings.model_copy(update={"deadline_check_seconds": 3600.0})
    app = create_app(settings)
    async with service_client(app) as client:
        deadline = _soon(2)
        response = await client.post("/referrals", json=referral_body(offer_deadline=deadline),
                                     headers=auth(settings, "borough", "croydon"))
        assert response.status_code == 201
        rid = response.json()["id"]
        assert response.json()["status"] == "open"
    deadline_at = datetime.fromisoformat(deadline.replace("Z", "+00:00"))
    await wait_for(lambda: today() >= deadline_at + timedelta(seconds=0.2), timeout=5)
    app = create_app(settings)  # the first pass runs at start-up
    async with service_client(app) as client:
        async def closed() -> bool:
            view = (await client.get(f"/referrals/{rid}", headers=auth(settings, "borough", "croydon"))).json()
            return view["status"] == "closed" and view["close_reason"] == "unfilled"

        await wait_for(closed, timeout=10)


# --- token claims (issue 12) --------------------------------------------------------------------


@pytest.mark.parametrize(("claims", "field", "rule"), [
    ({"tenant": 5}, "Authorization.tenant", "type"),
    ({"tenant": "croy\x00don"}, "Authorization.tenant", "format"),
    ({"tenant": " croydon "}, "Authorization.tenant", "format"),
    ({"tenant": ""}, "Authorization.tenant", "format"),
    ({"tenant": "c" * 65}, "Authorization.tenant", "max_length"),
    ({"tenant": "croydon\u200b"}, "Authorization.tenant", "format"),
    ({"role": "mayor"}, "Authorization.role", "one_of"),
    ({"sub": "x" * 101}, "Authorization.sub", "format"),
])
async def test_a_token_with_a_bad_claim_is_401_naming_the_claim_and_records_nothing(
        h: Harness, claims: dict[str, Any], field: str, rule: str) -> None:
    """Before, an int, a NUL or a padded tenant was a borough of its own (and 101 characters a 500
    on PostgreSQL: tests/integration/test_referral_inputs_pg.py)."""
    token = forged_token(h.settings, **{"role": "borough", "tenant": "croydon", **claims})
    response = await h.client.post("/referrals", json=referral_body(),
                                   headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "claims-1"})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (response.json()["field"], response.json()["rule"]) == (field, rule)
    assert await h.all_events() == []


async def test_tenant_and_role_claims_are_compared_in_lower_case(h: Harness) -> None:
    upper = {"Authorization": f"Bearer {forged_token(h.settings, role='Borough', tenant='CROYDON')}"}
    created = (await h.client.post("/referrals", json=referral_body(), headers=upper)).json()
    assert created["borough"] == "croydon"
    listed = (await h.client.get("/referrals", headers=h.as_("borough", "croydon"))).json()
    assert [r["id"] for r in listed["items"]] == [created["id"]]
    assert (await h.client.get(f"/referrals/{created['id']}", headers=upper)).status_code == 200
