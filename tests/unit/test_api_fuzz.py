"""Issue 9: schemathesis fuzzes every operation of the four services' OpenAPI schemas.

Each service runs in-process (SQLite + the local bus, lifespan started) and is called through
schemathesis's ASGI transport with a token of a role allowed to call the operation (and now and
then with no token or a wrong role). Two checks on every response:

- `not_a_server_error`: no 5xx, whatever the input;
- `problem_json_for_4xx`: a 4xx is `application/problem+json` whose body has `type`, `title`, a
  `status` equal to the HTTP status and a non-empty `detail`.

Path parameters are either generated or taken from a few resources seeded before fuzzing (an
applied provider, an open referral with an invitation and an offer, a webhook subscription), so
the commands reach the domain and not only the 404 branch. Writes sometimes carry an
`Idempotency-Key` (short keys repeat, so replays and reuse with another body happen too).

Bounded: `PLACEMATCH_FUZZ_EXAMPLES` examples per operation (default 15), derandomized so CI is
stable; `PLACEMATCH_FUZZ_RANDOM=1` explores with a fresh seed each run.

    .venv/bin/pytest tests/unit/test_api_fuzz.py -q
    PLACEMATCH_FUZZ_EXAMPLES=100 PLACEMATCH_FUZZ_RANDOM=1 .venv/bin/pytest tests/unit/test_api_fuzz.py -q
"""
from __future__ import annotations

import asyncio
import importlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from shared.auth import ROLES, mint_token
from shared.bus import Message
from shared.events import Envelope
from shared.settings import Settings

SERVICES = ("enrolment", "referral", "matching", "notification")
EXAMPLES = int(os.environ.get("PLACEMATCH_FUZZ_EXAMPLES", "15"))
RANDOM = os.environ.get("PLACEMATCH_FUZZ_RANDOM", "") not in ("", "0")
WRITES = {"POST", "PUT", "PATCH", "DELETE"}

# The invited provider of the seeded referral; also the owner of a seeded subscription.
PROVIDER = "0d1f6c9e-6f0a-4f1e-8a55-0f1d9b7e2a01"
COMMISSIONER = ("commissioner", "region")
AUDITOR = ("auditor", "region")
BOROUGH = ("borough", "croydon")
ANONYMOUS = None
Caller = tuple[str, str] | None


def settings_for(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, relay_poll_seconds=0.05, webhook_allow_private=True,
                    email_enabled=False, consumer_retry_base_seconds=0.01)


# --- who may call what -----------------------------------------------------------------------------
# (method, path) -> the callers to use. A new operation must be added here (the test says so), so
# that no endpoint is fuzzed only with tokens it refuses at the door.

def callers_for(service: str, provider: str) -> dict[tuple[str, str], list[Caller]]:
    own_provider = ("provider", provider)
    health = {("GET", "/health"): [ANONYMOUS], ("GET", "/ready"): [ANONYMOUS]}
    table: dict[str, dict[tuple[str, str], list[Caller]]] = {
        "enrolment": {
            ("POST", "/providers"): [ANONYMOUS, COMMISSIONER],
            ("GET", "/providers"): [COMMISSIONER, AUDITOR],
            ("GET", "/providers/{provider_id}"): [COMMISSIONER, AUDITOR, own_provider],
            ("GET", "/providers/{provider_id}/history"): [COMMISSIONER, AUDITOR, own_provider],
            ("PATCH", "/providers/{provider_id}"): [COMMISSIONER, own_provider],
            **{("POST", f"/providers/{{provider_id}}/{verb}"): [COMMISSIONER]
               for verb in ("inspections", "outcomes", "approve", "reject", "suspend", "reinstate")},
        },
        "referral": {
            ("POST", "/referrals"): [BOROUGH],
            ("GET", "/referrals"): [BOROUGH, own_provider],
            ("GET", "/referrals/{referral_id}"): [BOROUGH, own_provider],
            ("GET", "/referrals/{referral_id}/offers"): [BOROUGH, own_provider],
            ("GET", "/referrals/{referral_id}/audit"): [AUDITOR, BOROUGH],
            **{("POST", f"/referrals/{{referral_id}}/{verb}"): [BOROUGH]
               for verb in ("amend", "withdraw", "close", "award", "erase")},
            ("POST", "/referrals/{referral_id}/offers"): [own_provider],
            ("POST", "/referrals/{referral_id}/offers/{offer_id}/withdraw"): [own_provider],
            ("POST", "/referrals/{referral_id}/decline"): [own_provider],
        },
        "matching": {
            ("GET", "/referrals/{referral_id}/eligible-providers"): [BOROUGH, COMMISSIONER, AUDITOR],
            ("GET", "/referrals/{referral_id}/shortlist"): [BOROUGH, COMMISSIONER, AUDITOR, own_provider],
            ("GET", "/policy"): [COMMISSIONER, AUDITOR, BOROUGH, own_provider],
            ("PUT", "/policy"): [COMMISSIONER],
            ("GET", "/insights"): [COMMISSIONER, AUDITOR, BOROUGH, own_provider],
        },
        "notification": {
            ("GET", "/subscriptions"): [own_provider, BOROUGH, COMMISSIONER, AUDITOR],
            ("POST", "/subscriptions"): [own_provider, BOROUGH],
            ("GET", "/subscriptions/{subscription_id}"): [own_provider, BOROUGH, COMMISSIONER, AUDITOR],
            **{(method, f"/subscriptions/{{subscription_id}}{suffix}"): [own_provider, BOROUGH]
               for method, suffix in (("PATCH", ""), ("DELETE", ""), ("POST", "/rotate-secret"),
                                      ("POST", "/enable"), ("POST", "/disable"))},
            ("GET", "/deliveries"): [own_provider, BOROUGH, COMMISSIONER, AUDITOR],
            ("GET", "/deliveries/{delivery_id}"): [own_provider, BOROUGH, COMMISSIONER, AUDITOR],
            ("POST", "/deliveries/{delivery_id}/retry"): [own_provider, BOROUGH, COMMISSIONER],
        },
    }
    return {**health, **table[service]}


# --- the check -------------------------------------------------------------------------------------

def problem_json_for_4xx(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx answer is RFC 9457 problem+json: type, title, status (= the HTTP status), detail."""
    status = response.status_code
    if not 400 <= status < 500:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.split(";")[0].strip() == "application/problem+json", (
        f"{status} answered with content-type {content_type!r}, not application/problem+json")
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise AssertionError(f"{status} problem body is not JSON: {response.content[:200]!r}") from exc
    assert isinstance(body, dict), f"{status} problem body is not an object: {body!r}"
    assert isinstance(body.get("type"), str) and body["type"], f"{status} problem lacks `type`: {body!r}"
    assert isinstance(body.get("title"), str) and body["title"], f"{status} problem lacks `title`: {body!r}"
    assert body.get("status") == status, f"problem `status` {body.get('status')!r} != HTTP {status}"
    assert isinstance(body.get("detail"), str) and body["detail"].strip(), (
        f"{status} problem lacks a non-empty `detail`: {body!r}")
    return None


CHECKS = [not_a_server_error, problem_json_for_4xx]


# --- a service running in-process -------------------------------------------------------------------

class InProcess:
    """The service's ASGI app as schemathesis calls it. It remembers the event loop the app runs on
    (schemathesis starts the lifespan in its own thread) so that the test can run coroutines there:
    seeding requests and events fed to the consumers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)

    def run(self, make: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 30) -> Any:
        assert self.loop is not None, "the app has not started"
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)


class Service:
    def __init__(self, name: str, data_dir: Path) -> None:
        self.name = name
        self.settings = settings_for(data_dir)
        self.app = importlib.import_module(f"services.{name}.app").create_app(self.settings)
        self.asgi = InProcess(self.app)
        # Fetching the schema starts the app's lifespan (migrations, relay, consumers).
        self.schema = schemathesis.openapi.from_asgi("/openapi.json", self.asgi)
        self.seeds: dict[str, list[str]] = {}
        self.provider = PROVIDER
        self._tokens: dict[Caller, str] = {}

    def headers(self, caller: Caller) -> dict[str, str]:
        if caller is None:
            return {}
        if caller not in self._tokens:
            self._tokens[caller] = mint_token(self.settings, *caller)
        return {"Authorization": f"Bearer {self._tokens[caller]}"}

    def request(self, method: str, path: str, caller: Caller = None, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return await client.request(method, path, headers=self.headers(caller), **kwargs)
        return self.asgi.run(call)

    def expect(self, status: int, method: str, path: str, caller: Caller = None, **kwargs: Any) -> Any:
        response = self.request(method, path, caller, **kwargs)
        assert response.status_code == status, f"seeding {method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def feed(self, topic: str, type_: str, subject: str, data: dict[str, Any], source: str) -> None:
        runtime = self.app.state.runtime
        envelope = Envelope(type=type_, subject=subject, data=data, source=source)
        message = Message(self.settings.topic(topic), subject, envelope.to_json())
        self.asgi.run(lambda: runtime.bus.publish([message]))

    def until(self, condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"seeding: timed out waiting for {what}"
            time.sleep(0.05)


# --- seeds -------------------------------------------------------------------------------------------

def _now() -> datetime:
    return datetime.now(timezone.utc)


def application(urn: str) -> dict[str, Any]:
    return {"name": "Riverside School", "urn": urn, "kind": "independent_special_school",
            "lots": ["ASD", "SEMH"], "age_min": 5, "age_max": 19, "genders": ["female", "male"],
            "placement_types": ["day", "residential_38"], "capacity": 4,
            "location": {"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115},
            "boroughs_served": ["croydon", "lambeth"], "contact_email": "admissions@riverside.example"}


def referral_body() -> dict[str, Any]:
    now = _now()
    return {"child_ref": "CR-2026-0042", "birth_date": "2014-05-02", "gender": "male", "primary_need": "ASD",
            "secondary_needs": ["SLCN"], "placement_type": "day",
            "required_from": (now + timedelta(days=90)).date().isoformat(),
            "location": {"postcode": "CR0 1NX", "lat": 51.372, "lon": -0.099}, "max_travel_km": 30,
            "offer_deadline": (now + timedelta(days=30)).strftime("%Y-%m-%dT17:00:00Z"),
            "needs_profile": {k: 1 for k in (
                "physical_health", "emotional_health", "relationships", "risk_taking", "learning_disability",
                "educational_progress", "self_regulation", "community_engagement", "self_care",
                "goals_and_aspirations", "voice", "identity")},
            "outcomes": ["Attend school full time by spring term"]}


def seed_enrolment(svc: Service) -> None:
    applied = svc.expect(201, "POST", "/providers", json=application("100001"))
    approved = svc.expect(201, "POST", "/providers", json=application("100002"))
    svc.expect(200, "POST", f"/providers/{approved['id']}/inspections", COMMISSIONER,
               json={"framework": "ofsted_legacy", "overall": "good", "inspected_on": "2024-03-01"})
    svc.expect(200, "POST", f"/providers/{approved['id']}/approve", COMMISSIONER)
    svc.seeds["provider_id"] = [applied["id"], approved["id"]]
    svc.provider = approved["id"]  # the provider token reads and changes its own record


def seed_referral(svc: Service) -> None:
    referral_ids, offer_ids = [], []
    for _ in range(2):
        referral = svc.expect(201, "POST", "/referrals", BOROUGH, json=referral_body())
        rid = referral["id"]
        svc.feed("matching", "referral-matched", rid, {
            "referral_id": rid, "borough": "croydon", "invited": [PROVIDER], "newly_invited": [PROVIDER],
            "results": [], "trigger": "referral-raised"}, "placematch/matching")
        provider = ("provider", PROVIDER)
        svc.until(lambda: svc.request("GET", f"/referrals/{rid}", provider).status_code == 200,
                  "the invitation to reach the referral service")
        offer = svc.expect(201, "POST", f"/referrals/{rid}/offers", provider, json={
            "weekly_fee_pence": 425000, "start_date": (_now() + timedelta(days=90)).date().isoformat()})
        svc.feed("matching", "shortlist-ranked", rid, {
            "referral_id": rid, "borough": "croydon", "policy_version": 1, "excluded": [],
            "entries": [{"rank": 1, "offer_id": offer["id"], "provider_id": PROVIDER, "weekly_fee_pence": 425000,
                         "quality": "80.00", "price": "100.00", "score": "88.00"}]}, "placematch/matching")
        referral_ids.append(rid)
        offer_ids.append(offer["id"])
    svc.seeds["referral_id"] = referral_ids
    svc.seeds["offer_id"] = offer_ids


def seed_matching(svc: Service) -> None:
    """Matching learns referrals from events only; its path parameters stay generated."""
    svc.expect(200, "GET", "/policy", COMMISSIONER)


def seed_notification(svc: Service) -> None:
    ids = []
    for caller in (("provider", PROVIDER), BOROUGH):
        created = svc.expect(201, "POST", "/subscriptions", caller, json={
            "url": "https://portal.example/hooks/placematch", "event_types": ["referral.invited"],
            "contact_email": "ops@portal.example"})
        ids.append(created["id"])
    svc.seeds["subscription_id"] = ids


SEEDERS = {"enrolment": seed_enrolment, "referral": seed_referral, "matching": seed_matching,
           "notification": seed_notification}


# --- generation --------------------------------------------------------------------------------------

def case_strategy(svc: Service, method: str, path: str) -> st.SearchStrategy[Any]:
    operation = svc.schema[path][method]
    names = re.findall(r"{(\w+)}", path)
    strategies = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    if names and all(svc.seeds.get(n) for n in names):
        seeded = st.fixed_dictionaries({n: st.sampled_from(svc.seeds[n]) for n in names})
        strategies.append(seeded.flatmap(
            lambda params: operation.as_strategy(GenerationMode.POSITIVE, path_parameters=params)))
        strategies.append(seeded.flatmap(
            lambda params: operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=params)))
    return st.one_of(strategies)


idempotency_keys = st.one_of(
    st.none(),
    st.sampled_from(["k1", "k2"]),  # repeats: replays, and reuse with another body
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=260),
)


# --- tests -------------------------------------------------------------------------------------------

def _operations() -> Iterator[Any]:
    """Every operation of every service, read from the schemas (no app is started for this)."""
    with tempfile.TemporaryDirectory() as scratch:
        for name in SERVICES:
            app = importlib.import_module(f"services.{name}.app").create_app(settings_for(Path(scratch)))
            for path, methods in app.openapi()["paths"].items():
                for method in methods:
                    yield pytest.param(name, method.upper(), path, id=f"{name} {method.upper()} {path}")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    started: dict[str, Service] = {}

    def get(name: str) -> Service:
        if name not in started:
            svc = Service(name, tmp_path_factory.mktemp(f"fuzz-{name}"))
            started[name] = svc
            SEEDERS[name](svc)
        return started[name]

    yield _Lazy(get)  # type: ignore[misc]
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()


class _Lazy(dict):  # type: ignore[type-arg]
    def __init__(self, get: Callable[[str], Service]) -> None:
        super().__init__()
        self._get = get

    def __missing__(self, name: str) -> Service:
        return self._get(name)


@pytest.mark.parametrize(("service", "method", "path"), list(_operations()))
def test_operation_never_5xx_and_4xx_is_problem_json(services: dict[str, Service], service: str,
                                                       method: str, path: str) -> None:
    svc = services[service]
    allowed = callers_for(service, svc.provider).get((method, path))
    assert allowed is not None, (f"{method} {path} of {service} is not in callers_for(): add the roles "
                                 "that may call it")
    refused: list[Caller] = [ANONYMOUS] + [(role, "region") for role in ROLES
                                           if all(c is None or c[0] != role for c in allowed)]

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.data_too_large])
    @given(case=case_strategy(svc, method, path), data=st.data())
    def fuzz(case: Any, data: st.DataObject) -> None:
        # Mostly an allowed caller; one time in eight a missing token or a role that is refused.
        pool = allowed if data.draw(st.integers(0, 7), label="refused?") else refused
        caller = data.draw(st.sampled_from(pool), label="caller")
        headers = svc.headers(caller)
        if method in WRITES:
            key = data.draw(idempotency_keys, label="Idempotency-Key")
            if key is not None:
                headers["Idempotency-Key"] = key
        case.call_and_validate(headers=headers, checks=CHECKS)

    fuzz()
