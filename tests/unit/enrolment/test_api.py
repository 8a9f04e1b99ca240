"""HTTP contract of the enrolment service, on SQLite and the local bus."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from services.enrolment.app import create_app
from shared.settings import Settings
from shared.testing import auth, service_client

PROBLEM = "application/problem+json"
GOOD = {"framework": "ofsted_legacy", "overall": "good", "inspected_on": "2024-03-01"}
CARD = {"framework": "ofsted_report_card", "inspected_on": "2026-01-20", "safeguarding": "met",
        "areas": {"leadership": "strong", "achievement": "expected", "inclusion": "exceptional"}}


def application(**overrides: Any) -> dict[str, Any]:
    body = {
        "name": "Riverside School", "urn": "100001", "kind": "independent_special_school",
        "lots": ["ASD", "SEMH"], "age_min": 5, "age_max": 19, "genders": ["female", "male"],
        "placement_types": ["day", "residential_38"], "capacity": 4,
        "location": {"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115},
        "boroughs_served": ["croydon", "lambeth"],
        "contact_email": "admissions@riverside.example",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, relay_poll_seconds=0.05)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(create_app(settings)) as client:
        yield client


@pytest.fixture
def commissioner(settings: Settings) -> dict[str, str]:
    return auth(settings, "commissioner", "partnership")


async def apply(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/providers", json=application(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


async def approved(client: httpx.AsyncClient, headers: dict[str, str],
                   **overrides: Any) -> dict[str, Any]:
    provider = await apply(client, **overrides)
    pid = provider["id"]
    assert (await client.post(f"/providers/{pid}/inspections", json=GOOD,
                              headers=headers)).status_code == 200
    response = await client.post(f"/providers/{pid}/approve", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def assert_problem(response: httpx.Response, status: int, field: str | None = None,
                   rule: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["detail"]
    if field is not None:
        assert body["field"] == field, body
    if rule is not None:
        assert body["rule"] == rule, body
    return body


async def event_count(client: httpx.AsyncClient) -> int:
    runtime = client._transport.app.state.runtime  # type: ignore[attr-defined]
    return len(await runtime.store.read_all())


class TestApply:
    async def test_apply_is_open_and_returns_the_provider(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/providers", json=application())
        assert response.status_code == 201
        body = response.json()
        assert body["status"] == "applied"
        assert body["quality_score"] is None
        assert body["lots"] == ["ASD", "SEMH"]
        assert response.headers["location"] == f"/providers/{body['id']}"

    async def test_applicant_is_the_actor(self, client: httpx.AsyncClient,
                                          commissioner: dict[str, str]) -> None:
        pid = (await apply(client))["id"]
        history = (await client.get(f"/providers/{pid}/history", headers=commissioner)).json()
        assert history["events"][0]["actor"] == f"provider:{pid}"

    @pytest.mark.parametrize(("overrides", "field", "rule"), [
        ({"lots": ["ASD", "BANANA"]}, "lots", "unknown_code"),
        ({"age_min": 16, "age_max": 11}, "age_max", "age_range_order"),
        ({"name": ...}, "name", "missing"),
        ({"capacity": ...}, "capacity", "missing"),
        ({"capacity": -1}, "capacity", "range"),
        ({"capacity": "four"}, "capacity", "int_type"),
        ({"kind": "academy"}, "kind", "unknown_code"),
        ({"placement_types": ["weekly_boarding"]}, "placement_types", "unknown_code"),
        ({"contact_email": "nobody"}, "contact_email", "format"),
        ({"location": {"postcode": "Atlantis"}}, "location.postcode", "format"),
        ({"status": "approved"}, "status", "extra_forbidden"),
    ])
    async def test_bad_input_is_problem_json_and_records_nothing(
            self, client: httpx.AsyncClient, overrides: dict[str, Any], field: str,
            rule: str) -> None:
        response = await client.post("/providers", json=application(**overrides))
        assert_problem(response, 422, field, rule)
        assert await event_count(client) == 0

    @pytest.mark.parametrize(("members", "field", "rule"), [
        # each was accepted (201), or a 400 naming no field (not UTF-8), before issue 12
        (b'"capacity": 4, "capacity": 5', "capacity", "duplicate_key"),
        (b'"location": {"postcode": "SE1 7PB", "postcode": "CR0 1NX"}', "location.postcode", "duplicate_key"),
        (b'"name": "River\\u0000side"', "name", "nul_character"),
        (b'"name": "\\u200b\\u200c\\u2060\\ufeff"', "name", "required"),
        (b'"name": " \\u3164 "', "name", "required"),
        (b'"lots": ["ASD\\u0000"]', "lots.0", "nul_character"),
        (b'"name": "\xe9cole"', "body", "not_utf8"),
    ])
    async def test_strict_body_is_422_naming_field_and_rule(
            self, client: httpx.AsyncClient, members: bytes, field: str, rule: str) -> None:
        """The application with `members` (raw JSON) in place of the fields they name."""
        named = {"capacity", "location", "name", "lots"}
        body = orjson.dumps({k: v for k, v in application().items() if k not in named or k.encode() not in members})
        response = await client.post("/providers", content=body[:-1] + b", " + members + b"}",
                                     headers={"content-type": "application/json"})
        assert_problem(response, 422, field, rule)
        assert await event_count(client) == 0

    async def test_capacity_above_the_domain_maximum_is_refused(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.post("/providers", json=application(capacity=10_001)), 422,
                       "capacity", "range")
        assert await event_count(client) == 0

    async def test_not_json_is_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/providers", content=b"{not json",
                                     headers={"content-type": "application/json"})
        assert_problem(response, 422)

    async def test_same_urn_cannot_enrol_twice(self, client: httpx.AsyncClient) -> None:
        await apply(client)
        response = await client.post("/providers", json=application(name="Riverside Again"))
        assert_problem(response, 409, "urn", "duplicate_urn")

    async def test_idempotency_key_returns_the_first_answer(
            self, client: httpx.AsyncClient) -> None:
        headers = {"Idempotency-Key": "apply-riverside-1"}
        first = await client.post("/providers", json=application(), headers=headers)
        again = await client.post("/providers", json=application(), headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.json()["id"] == first.json()["id"]
        assert await event_count(client) == 1


class TestAuthorisation:
    async def test_commands_need_a_token(self, client: httpx.AsyncClient) -> None:
        pid = (await apply(client))["id"]
        assert_problem(await client.post(f"/providers/{pid}/approve"), 401, "Authorization")
        assert_problem(await client.get(f"/providers/{pid}"), 401)

    @pytest.mark.parametrize("role", ["borough", "provider", "auditor"])
    async def test_wrong_role_is_forbidden(self, client: httpx.AsyncClient, settings: Settings,
                                           role: str) -> None:
        pid = (await apply(client))["id"]
        headers = auth(settings, role, pid if role == "provider" else "croydon")
        for path, body in ((f"/providers/{pid}/approve", None),
                           (f"/providers/{pid}/inspections", GOOD),
                           (f"/providers/{pid}/suspend", {"reason": "x"})):
            assert_problem(await client.post(path, json=body, headers=headers), 403,
                           "Authorization")
        assert await event_count(client) == 1

    async def test_bad_token_is_unauthorised(self, client: httpx.AsyncClient) -> None:
        pid = (await apply(client))["id"]
        response = await client.post(f"/providers/{pid}/approve",
                                     headers={"Authorization": "Bearer nonsense"})
        assert_problem(response, 401)

    async def test_provider_reads_only_its_own_record(self, client: httpx.AsyncClient,
                                                      settings: Settings) -> None:
        pid = (await apply(client))["id"]
        other = (await apply(client, urn="100002"))["id"]
        own = auth(settings, "provider", pid)
        assert (await client.get(f"/providers/{pid}", headers=own)).status_code == 200
        assert (await client.get(f"/providers/{pid}/history", headers=own)).status_code == 200
        assert_problem(await client.get(f"/providers/{other}", headers=own), 403)
        assert_problem(await client.get(f"/providers/{other}/history", headers=own), 403)
        assert_problem(await client.get("/providers", headers=own), 403)

    async def test_auditor_reads(self, client: httpx.AsyncClient, settings: Settings) -> None:
        pid = (await apply(client))["id"]
        auditor = auth(settings, "auditor", "partnership")
        assert (await client.get(f"/providers/{pid}/history", headers=auditor)).status_code \
            == 200
        assert (await client.get("/providers", headers=auditor)).status_code == 200


class TestLifecycle:
    async def test_inspect_score_approve(self, client: httpx.AsyncClient,
                                         commissioner: dict[str, str]) -> None:
        pid = (await apply(client))["id"]
        response = await client.post(f"/providers/{pid}/inspections", json=CARD,
                                     headers=commissioner)
        assert response.status_code == 200, response.text
        assert response.json()["quality_score"] == "85.00"
        response = await client.post(f"/providers/{pid}/outcomes", headers=commissioner,
                                     json={"period": "2025-26", "kpis": {"attendance": 92,
                                           "ehcp_progress": 75, "placement_stability": 88}})
        body = response.json()
        assert body["quality_score"] == "85.00"  # 0.7 * 85 + 0.3 * 85
        assert body["score"] == {"quality_score": "85.00", "inspection_score": "85.00",
                                 "outcomes_score": "85.00", "policy_version": 2}
        response = await client.post(f"/providers/{pid}/approve", headers=commissioner,
                                     json={"reason": "Accredited"})
        assert response.status_code == 200
        assert response.json()["status"] == "approved"
        fetched = (await client.get(f"/providers/{pid}", headers=commissioner)).json()
        assert fetched["status"] == "approved" and fetched["quality_score"] == "85.00"

    async def test_reject_then_approve_is_a_conflict(self, client: httpx.AsyncClient,
                                                     commissioner: dict[str, str]) -> None:
        pid = (await apply(client))["id"]
        response = await client.post(f"/providers/{pid}/reject", headers=commissioner,
                                     json={"reason": "No insurance certificate"})
        assert response.json()["status"] == "rejected"
        before = await event_count(client)
        assert_problem(await client.post(f"/providers/{pid}/approve", headers=commissioner),
                       409, rule="cannot_approve_rejected")
        assert await event_count(client) == before

    async def test_reject_needs_a_reason(self, client: httpx.AsyncClient,
                                         commissioner: dict[str, str]) -> None:
        pid = (await apply(client))["id"]
        assert_problem(await client.post(f"/providers/{pid}/reject", headers=commissioner,
                                         json={}), 422, "reason", "missing")
        assert_problem(await client.post(f"/providers/{pid}/reject", headers=commissioner,
                                         json={"reason": " "}), 422, "reason", "required")

    async def test_suspend_and_reinstate(self, client: httpx.AsyncClient,
                                         commissioner: dict[str, str]) -> None:
        pid = (await approved(client, commissioner))["id"]
        assert_problem(await client.post(f"/providers/{pid}/reinstate", headers=commissioner),
                       409, rule="cannot_reinstate_approved")
        response = await client.post(f"/providers/{pid}/suspend", headers=commissioner,
                                     json={"reason": "Safeguarding allegation under review"})
        assert response.json()["status"] == "suspended"
        assert response.json()["suspension"] == {
            "reason": "Safeguarding allegation under review", "automatic": False}
        response = await client.post(f"/providers/{pid}/reinstate", headers=commissioner)
        assert response.status_code == 200 and response.json()["status"] == "approved"

    async def test_inadequate_inspection_suspends_automatically(
            self, client: httpx.AsyncClient, commissioner: dict[str, str]) -> None:
        pid = (await approved(client, commissioner))["id"]
        response = await client.post(f"/providers/{pid}/inspections", headers=commissioner,
                                     json={**CARD, "safeguarding": "not_met"})
        body = response.json()
        assert body["status"] == "suspended"
        assert body["suspension"]["automatic"] is True
        assert "safeguarding" in body["suspension"]["reason"]

    async def test_blocking_inspection_blocks_approval(self, client: httpx.AsyncClient,
                                                       commissioner: dict[str, str]) -> None:
        pid = (await apply(client))["id"]
        await client.post(f"/providers/{pid}/inspections", headers=commissioner,
                          json={**GOOD, "overall": "inadequate"})
        assert_problem(await client.post(f"/providers/{pid}/approve", headers=commissioner),
                       409, "inspection", "blocking_inspection")

    @pytest.mark.parametrize(("body", "field", "rule"), [
        ({**GOOD, "overall": "brilliant"}, "overall", "unknown_code"),
        ({**GOOD, "inspected_on": "yesterday"}, "inspected_on", "format"),
        ({**GOOD, "inspected_on": "2999-01-01"}, "inspected_on", "not_in_future"),
        ({"framework": "ofsted_legacy", "overall": "good"}, "inspected_on", "missing"),
        ({**CARD, "areas": {"leadership": "good"}}, "areas.leadership", "unknown_code"),
        ({**CARD, "safeguarding": None}, "safeguarding", "required"),
    ])
    async def test_bad_inspection(self, client: httpx.AsyncClient, commissioner: dict[str, str],
                                  body: dict[str, Any], field: str, rule: str) -> None:
        pid = (await apply(client))["id"]
        response = await client.post(f"/providers/{pid}/inspections", json=body,
                                     headers=commissioner)
        assert_problem(response, 422, field, rule)
        assert await event_count(client) == 1

    @pytest.mark.parametrize(("body", "field", "rule"), [
        ({"period": "2025-26", "kpis": {"attendance": 120}}, "kpis.attendance", "range"),
        ({"period": "2025-26", "kpis": {"attendance": 92.5}}, "kpis.attendance", "int_type"),
        ({"period": "last year", "kpis": {"attendance": 92}}, "period", "academic_year"),
        ({"kpis": {"attendance": 92}}, "period", "missing"),
    ])
    async def test_bad_outcomes(self, client: httpx.AsyncClient, commissioner: dict[str, str],
                                body: dict[str, Any], field: str, rule: str) -> None:
        pid = (await apply(client))["id"]
        response = await client.post(f"/providers/{pid}/outcomes", json=body,
                                     headers=commissioner)
        assert_problem(response, 422, field, rule)

    async def test_unknown_provider_is_not_found(self, client: httpx.AsyncClient,
                                                 commissioner: dict[str, str]) -> None:
        ghost = "00000000-0000-0000-0000-000000000000"
        assert_problem(await client.get(f"/providers/{ghost}", headers=commissioner), 404)
        assert_problem(await client.get(f"/providers/{ghost}/history", headers=commissioner),
                       404)
        assert_problem(await client.post(f"/providers/{ghost}/approve", headers=commissioner),
                       404)
        assert await event_count(client) == 0


class TestUpdates:
    async def test_provider_updates_its_own_capacity(self, client: httpx.AsyncClient,
                                                     settings: Settings,
                                                     commissioner: dict[str, str]) -> None:
        pid = (await approved(client, commissioner))["id"]
        own = auth(settings, "provider", pid)
        response = await client.patch(f"/providers/{pid}", headers=own,
                                      json={"capacity": 2, "contact_email": "new@riverside.example"})
        assert response.status_code == 200, response.text
        assert response.json()["capacity"] == 2

    async def test_provider_cannot_change_lots_or_another_provider(
            self, client: httpx.AsyncClient, settings: Settings,
            commissioner: dict[str, str]) -> None:
        pid = (await approved(client, commissioner))["id"]
        other = (await apply(client, urn="100002"))["id"]
        own = auth(settings, "provider", pid)
        assert_problem(await client.patch(f"/providers/{pid}", headers=own,
                                          json={"lots": ["ASD"]}), 403, "lots")
        assert_problem(await client.patch(f"/providers/{other}", headers=own,
                                          json={"capacity": 1}), 403)

    @pytest.mark.parametrize(("own", "body", "status", "field", "rule"), [
        # the body's JSON types first (422), then who may change what (403), then the values' rules
        (True, {"lots": "ASD"}, 422, "lots", "list_type"),
        (True, {"lots": ["NOPE"]}, 403, "lots", "commissioner_only"),
        (True, {"name": "  "}, 403, "name", "commissioner_only"),
        (True, {"capacity": -1}, 422, "capacity", "range"),
        (True, {"capacity": "x"}, 422, "capacity", "int_type"),
        (True, {"status": "x"}, 422, "status", "extra_forbidden"),
        (False, {"capacity": -1}, 403, "Authorization", None),
        (False, {"capacity": "x"}, 422, "capacity", "int_type"),
    ])
    async def test_order_of_refusals_for_a_provider(
            self, client: httpx.AsyncClient, settings: Settings, own: bool, body: dict[str, Any], status: int,
            field: str, rule: str | None) -> None:
        pid = (await apply(client))["id"]
        headers = auth(settings, "provider", pid if own else "someone-else")
        assert_problem(await client.patch(f"/providers/{pid}", headers=headers, json=body), status, field, rule)
        assert await event_count(client) == 1

    async def test_commissioner_updates_profile(self, client: httpx.AsyncClient,
                                                commissioner: dict[str, str]) -> None:
        pid = (await approved(client, commissioner))["id"]
        response = await client.patch(f"/providers/{pid}", headers=commissioner,
                                      json={"lots": ["ASD", "SLCN"], "location": None})
        body = response.json()
        assert body["lots"] == ["ASD", "SLCN"] and body["location"] is None
        history = (await client.get(f"/providers/{pid}/history", headers=commissioner)).json()
        updated = history["events"][-1]
        assert updated["type"] == "provider-updated"
        assert updated["data"]["changes"] == {"lots": ["ASD", "SLCN"], "location": None}
        assert updated["data"]["quality_score"] == "80.00"

    @pytest.mark.parametrize(("body", "field", "rule"), [
        ({"capacity": -1}, "capacity", "range"),
        ({"age_min": 30}, "age_min", "range"),
        ({"age_min": 19, "age_max": 6}, "age_max", "age_range_order"),
        ({"lots": ["ASD", "NOPE"]}, "lots", "unknown_code"),
        ({"urn": "999999"}, "urn", "immutable"),
        ({"status": "approved"}, "status", "extra_forbidden"),
    ])
    async def test_bad_update(self, client: httpx.AsyncClient, commissioner: dict[str, str],
                              body: dict[str, Any], field: str, rule: str) -> None:
        pid = (await apply(client))["id"]
        assert_problem(await client.patch(f"/providers/{pid}", headers=commissioner,
                                          json=body), 422, field, rule)
        assert await event_count(client) == 1

    async def test_no_op_update_records_nothing(self, client: httpx.AsyncClient,
                                                commissioner: dict[str, str]) -> None:
        pid = (await apply(client))["id"]
        response = await client.patch(f"/providers/{pid}", headers=commissioner,
                                      json={"capacity": 4})
        assert response.status_code == 200
        assert await event_count(client) == 1


class TestReading:
    async def test_history_is_the_events_in_order(self, client: httpx.AsyncClient,
                                                  commissioner: dict[str, str]) -> None:
        pid = (await approved(client, commissioner))["id"]
        await client.post(f"/providers/{pid}/suspend", headers=commissioner,
                          json={"reason": "LADO referral"})
        body = (await client.get(f"/providers/{pid}/history", headers=commissioner)).json()
        events = body["events"]
        assert [e["type"] for e in events] == [
            "provider-applied", "provider-inspected", "provider-rescored", "provider-approved",
            "provider-suspended"]
        assert [e["sequence"] for e in events] == [1, 2, 3, 4, 5]
        assert all(e["subject"] == pid and e["source"] == "placematch/enrolment" for e in events)
        assert events[-1]["actor"] == "commissioner:partnership"
        assert events[-1]["data"] == {"reason": "LADO referral", "automatic": False}
        approval = events[3]["data"]
        for key in ("lots", "age_min", "age_max", "genders", "placement_types", "capacity",
                    "location", "boroughs_served", "quality_score"):
            assert key in approval
        assert approval["quality_score"] == "80.00"

    async def test_list_filters_by_status_and_lot(self, client: httpx.AsyncClient,
                                                  commissioner: dict[str, str]) -> None:
        a = (await approved(client, commissioner, name="Alder School"))["id"]
        b = (await apply(client, urn="100002", name="Birch College", lots=["SLCN"]))["id"]
        listing = (await client.get("/providers", headers=commissioner)).json()
        assert [p["id"] for p in listing["items"]] == [a, b] and listing["total"] == 2
        approved_only = (await client.get("/providers?status=approved",
                                          headers=commissioner)).json()
        assert [p["id"] for p in approved_only["items"]] == [a]
        slcn = (await client.get("/providers?lot=slcn", headers=commissioner)).json()
        assert [p["id"] for p in slcn["items"]] == [b]
        assert_problem(await client.get("/providers?status=dormant", headers=commissioner),
                       422, "status")
        assert_problem(await client.get("/providers?lot=BANANA", headers=commissioner),
                       422, "lot", "unknown_code")

    async def test_list_follows_updates(self, client: httpx.AsyncClient,
                                        commissioner: dict[str, str]) -> None:
        pid = (await approved(client, commissioner))["id"]
        await client.patch(f"/providers/{pid}", headers=commissioner, json={"lots": ["PD"]})
        assert (await client.get("/providers?lot=ASD", headers=commissioner)).json()["total"] == 0
        assert (await client.get("/providers?lot=PD", headers=commissioner)).json()["total"] == 1

    async def test_health_and_openapi(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/health")).json()["service"] == "enrolment"
        assert (await client.get("/ready")).status_code == 200
        document = (await client.get("/openapi.json")).json()
        assert "/providers/{provider_id}/history" in document["paths"]
        schemas = document["components"]["schemas"]
        assert "ASD" in schemas["NeedCode"]["enum"] and "residential_52" in schemas["PlacementType"]["enum"]
        assert schemas["ApplicationIn"]["properties"]["kind"]["$ref"].endswith("/ProviderKind")
        assert schemas["InspectionIn"]["properties"]["inspected_on"]["format"] == "date"
        assert schemas["ApplicationIn"]["properties"]["capacity"]["maximum"] == 10_000


async def test_approval_is_published_on_the_enrolment_topic(
        client: httpx.AsyncClient, settings: Settings, commissioner: dict[str, str]) -> None:
    from shared.events import Envelope
    from tests.helpers import wait_for

    pid = (await approved(client, commissioner))["id"]
    runtime = client._transport.app.state.runtime  # type: ignore[attr-defined]
    subscription = runtime.bus.subscribe("test-reader", [settings.topic("enrolment")])
    await subscription.start()
    seen: list[Envelope] = []

    async def approval_seen() -> bool:
        for message in await subscription.fetch(timeout=0.2):
            assert message.key in (pid, pid.encode())
            seen.append(Envelope.from_kafka(message.value, message.headers or None))
        return any(e.type == "provider-approved" for e in seen)

    try:
        await wait_for(approval_seen, timeout=10)
    finally:
        await subscription.stop()
    assert [e.type for e in seen][:4] == ["provider-applied", "provider-inspected",
                                         "provider-rescored", "provider-approved"]


@pytest.mark.parametrize(("path", "body", "field", "rule"), [
    ("inspections", {**GOOD, "inspected_on": "0001-01-01"}, "inspected_on", "range"),
    ("inspections", {**GOOD, "inspected_on": "1989-12-31"}, "inspected_on", "range"),
    ("outcomes", {"period": "0001-02", "kpis": {"attendance": 90}}, "period", "range"),
    ("outcomes", {"period": "9998-99", "kpis": {"attendance": 90}}, "period", "range"),
    ("reject", {"reason": "\u200b\u200d"}, "reason", "required"),
])
async def test_implausible_dates_and_invisible_reasons_are_refused(
        client: httpx.AsyncClient, commissioner: dict[str, str], path: str, body: dict[str, Any],
        field: str, rule: str) -> None:
    """Issue 12: an inspection of the year 1 (or an outcome year 0001-02) was accepted and would
    count, or not, by a date no inspection can have."""
    pid = (await apply(client))["id"]
    before = await event_count(client)
    assert_problem(await client.post(f"/providers/{pid}/{path}", json=body, headers=commissioner), 422, field, rule)
    assert await event_count(client) == before


async def test_an_inspection_of_1990_still_counts(client: httpx.AsyncClient, commissioner: dict[str, str]) -> None:
    pid = (await apply(client))["id"]
    response = await client.post(f"/providers/{pid}/inspections", json={**GOOD, "inspected_on": "1990-01-01"},
                                 headers=commissioner)
    assert response.status_code == 200, response.text
