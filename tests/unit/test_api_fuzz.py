"""Issue 9: schemathesis fuzzes every operation of the four services' OpenAPI schemas.

Each service runs in-process (SQLite + the local bus, lifespan started) and is called through
schemathesis's ASGI transport with a token of a role allowed to call the operation (and now and
then with no token or a wrong role). Two checks on every response:

- `not_a_server_error`: no 5xx, whatever the input;
- `problem_json_for_4xx`: a 4xx is `application/problem+json` whose body has `type`, `title`, a
  `status` equal to the HTTP status and a non-empty `detail`.

Path parameters are either generated or taken from a few resources seeded before fuzzing (an
applied provider, an open referral with an invitation and an offer, a webhook subscription), so
the commands reach the domain and not only the 404 branch. Besides schemathesis's positive and
negative cases, bodies are built from a valid one with one or two fields replaced by any JSON value
or removed. Writes sometimes carry an `Idempotency-Key` (short keys repeat, so replays and reuse
with another body happen too), any request an `X-Correlation-ID`.

`test_exact_case` replays, through the same transport and checks, the requests the fuzzing found
failing (or reaches only by luck at the default budget): they fail until the bugs are fixed.

Bounded: `PLACEMATCH_FUZZ_EXAMPLES` examples per operation (default 15), derandomized so CI is
stable; `PLACEMATCH_FUZZ_RANDOM=1` explores with a fresh seed each run; `PLACEMATCH_FUZZ_STATS=1`
(with `-s`) prints the statuses each operation answered.

    .venv/bin/pytest tests/unit/test_api_fuzz.py -q
    PLACEMATCH_FUZZ_EXAMPLES=100 PLACEMATCH_FUZZ_RANDOM=1 .venv/bin/pytest tests/unit/test_api_fuzz.py -q
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import json
import os
import re
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
import structlog
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
SHOW_STATS = os.environ.get("PLACEMATCH_FUZZ_STATS", "") not in ("", "0")
STATS: dict[str, Counter[int]] = defaultdict(Counter)
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
REQUEST_TIMEOUT = 60  # seconds; generous for slow CI machines (schemathesis's default is 10)

# The invited provider of the seeded referral; also the owner of a seeded subscription.
PROVIDER = "0d1f6c9e-6f0a-4f1e-8a55-0f1d9b7e2a01"
COMMISSIONER = ("commissioner", "region")
AUDITOR = ("auditor", "region")
BOROUGH = ("borough", "croydon")
ANONYMOUS = None
Caller = tuple[str, str] | None


def settings_for(data_dir: Path) -> Settings:
    # notification's settings are the core ones plus its own (a Settings every service takes)
    from services.notification.settings import NotificationSettings

    return NotificationSettings(data_dir=data_dir, relay_poll_seconds=0.05, webhook_allow_private=True,
                                email_enabled=False, consumer_retry_base_seconds=0.01)


# --- who may call what -----------------------------------------------------------------------------
# (method, path) -> the callers to use. A new operation must be added here (the test says so), so
# that no endpoint is fuzzed only with tokens it refuses at the door.

def callers_for(service: str, provider: str) -> dict[tuple[str, str], list[Caller]]:
    own_provider = ("provider", provider)
    health = {("GET", "/health"): [ANONYMOUS], ("GET", "/ready"): [ANONYMOUS],
              ("GET", "/problems"): [ANONYMOUS], ("GET", "/problems/{rule}"): [ANONYMOUS]}
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
            ("GET", "/referrals"): [BOROUGH, own_provider, COMMISSIONER, AUDITOR],
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
            ("GET", "/policy/history"): [COMMISSIONER, AUDITOR],
            ("POST", "/policy/preview"): [COMMISSIONER, AUDITOR],
            ("GET", "/insights/time-to-place"): [COMMISSIONER, AUDITOR, BOROUGH, own_provider],
            ("GET", "/insights/fees"): [COMMISSIONER, AUDITOR, BOROUGH, own_provider],
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
    """The service's ASGI app as schemathesis calls it, run on an event loop of our own.

    The app's lifespan (migrations, relay, consumers) runs once for the module in a thread with its
    own loop; each request schemathesis sends (on its own loop) is handed over to that loop. So the
    test decides when the app starts and stops (schemathesis's pytest plugin would otherwise end the
    lifespan after every test), and seeding coroutines run next to the requests (`run`).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-app-loop", daemon=True)
        self._stopping: asyncio.Event | None = None
        self._serving: concurrent.futures.Future[None] | None = None

    def start(self, timeout: float = 60) -> None:
        self._thread.start()
        started = threading.Event()

        async def serve() -> None:
            self._stopping = asyncio.Event()
            async with self.app.router.lifespan_context(self.app):
                started.set()
                await self._stopping.wait()

        self._serving = asyncio.run_coroutine_threadsafe(serve(), self.loop)
        while not started.wait(0.05):
            if self._serving.done():
                self._serving.result()  # the start-up failed: raise why
        assert started.is_set(), "the app did not start"

    def stop(self, timeout: float = 30) -> None:
        try:
            if self._serving is not None and self._stopping is not None:
                self.loop.call_soon_threadsafe(self._stopping.set)
                self._serving.result(timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    def run(self, make: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # the app's lifespan is ours (start/stop): acknowledge only
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        caller = asyncio.get_running_loop()

        async def receive_there() -> Any:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(receive(), caller))

        async def send_there(message: Any) -> None:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(send(message), caller))

        started = False

        async def send_tracked(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_there(message)

        scope = {**scope, "state": {}}
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
                self.app(scope, receive_there, send_tracked), self.loop))
        except Exception:
            # What a server (uvicorn) does with an exception that escaped the app: a plain 500 if
            # nothing was sent yet; the check then reports it like any other 5xx.
            if not started:
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                await send({"type": "http.response.body", "body": b"Internal Server Error"})


class Service:
    def __init__(self, name: str, data_dir: Path) -> None:
        self.name = name
        self.settings = settings_for(data_dir)
        self.app = importlib.import_module(f"services.{name}.app").create_app(self.settings)
        self.asgi = InProcess(self.app)
        self.asgi.start()
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

    def request(self, method: str, path: str, caller: Caller = None, headers: dict[str, str] | None = None,
                **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return await client.request(method, path, headers={**self.headers(caller), **(headers or {})},
                                            **kwargs)
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
    return datetime.now(UTC)


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

        def invited(rid: str = rid, provider: Caller = provider) -> bool:
            return svc.request("GET", f"/referrals/{rid}", provider).status_code == 200
        svc.until(invited, "the invitation to reach the referral service")
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

# Valid bodies, from which one or two fields are replaced by anything JSON can carry (or removed):
# generated bodies rarely pass the domain's rules, these reach them one field at a time.

def templates() -> dict[tuple[str, str, str], Callable[[], dict[str, Any]]]:
    inspection = {"framework": "ofsted_report_card", "inspected_on": "2026-01-20", "safeguarding": "met",
                  "areas": {"leadership": "strong", "achievement": "expected", "inclusion": "exceptional"}}
    offer = {"weekly_fee_pence": 425000, "start_date": (_now() + timedelta(days=90)).date().isoformat(),
             "notes": "Place in our ASD unit"}
    subscription = {"url": "https://portal.example/hooks/placematch", "event_types": ["referral.invited"],
                    "contact_email": "ops@portal.example"}
    return {
        ("enrolment", "POST", "/providers"): lambda: application(f"{uuid.uuid4().int % 10**6:06d}"),
        ("enrolment", "PATCH", "/providers/{provider_id}"): lambda: {
            "capacity": 3, "contact_email": "new@riverside.example", "lots": ["ASD"], "age_min": 7,
            "location": {"postcode": "SE1 7PB", "lat": 51.5, "lon": -0.1}},
        ("enrolment", "POST", "/providers/{provider_id}/inspections"): lambda: dict(inspection),
        ("enrolment", "POST", "/providers/{provider_id}/outcomes"): lambda: {
            "period": "2025-26", "kpis": {"attendance": 92, "ehcp_progress": 75}},
        ("enrolment", "POST", "/providers/{provider_id}/suspend"): lambda: {"reason": "safeguarding concern"},
        ("referral", "POST", "/referrals"): referral_body,
        ("referral", "POST", "/referrals/{referral_id}/amend"): lambda: {
            k: v for k, v in referral_body().items() if k in ("gender", "max_travel_km", "outcomes", "location",
                                                             "offer_deadline", "needs_profile", "birth_date")},
        ("referral", "POST", "/referrals/{referral_id}/offers"): lambda: dict(offer),
        ("referral", "POST", "/referrals/{referral_id}/award"): lambda: {
            "offer_id": PROVIDER, "justification": "Parental preference"},
        ("referral", "POST", "/referrals/{referral_id}/decline"): lambda: {"reason": "no_capacity", "note": "full"},
        ("matching", "PUT", "/policy"): lambda: {"quality_weight": "0.60", "price_weight": "0.40",
                                                 "min_quality": "50.00"},
        ("notification", "POST", "/subscriptions"): lambda: dict(subscription),
        ("notification", "PATCH", "/subscriptions/{subscription_id}"): lambda: dict(subscription),
    }


wild_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=5).map(str), st.text(max_size=30),
    st.sampled_from(["", " ", "2026-02-30", "0001-01-01", "9999-12-31", "9999-12-31T23:59:59Z",
                     "2026-07-01T17:00:00", "2026-07-01T17:00:00+14:00", "1e309", "-1", "-0.01", "1.001",
                     "NaN", "Infinity", "asd", "ASD", "\x00", "ñ" * 300, "x" * 5000, "http://127.0.0.1:1/",
                     "ftp://example.org/", "https://[::1]/"]),
    st.lists(st.one_of(st.text(max_size=8), st.integers(), st.none()), max_size=3),
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=3),
)
REMOVE = object()


def mutated(template: Callable[[], dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """The template with up to two (possibly nested) fields replaced or removed."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        body = template()
        for _ in range(draw(st.integers(0, 2), label="mutations")):
            target = body
            key = draw(st.sampled_from(sorted(target)), label="field")
            if isinstance(target[key], dict) and target[key] and draw(st.booleans(), label="nested"):
                target = target[key]
                key = draw(st.sampled_from(sorted(target)), label="nested field")
            value = draw(st.one_of(st.just(REMOVE), wild_values), label="value")
            if value is REMOVE:
                target.pop(key, None)
            else:
                target[key] = value
            if not body:
                break
        return body

    return build()


def case_strategy(svc: Service, method: str, path: str) -> st.SearchStrategy[Any]:
    operation = svc.schema[path][method]
    names = re.findall(r"{(\w+)}", path)
    seeded = bool(names) and all(svc.seeds.get(n) for n in names)
    strategies = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    params: st.SearchStrategy[dict[str, Any]] = (
        st.fixed_dictionaries({n: st.sampled_from(svc.seeds[n]) for n in names}) if seeded else st.just({}))
    if seeded:
        strategies.append(params.flatmap(
            lambda pp: operation.as_strategy(GenerationMode.POSITIVE, path_parameters=pp)))
        strategies.append(params.flatmap(
            lambda pp: operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=pp)))
    template = templates().get((svc.name, method, path))
    if template is not None:
        mutant = st.tuples(params, mutated(template)).flatmap(
            lambda pair: operation.as_strategy(GenerationMode.POSITIVE, path_parameters=pair[0] or None,
                                               body=pair[1], media_type="application/json"))
        strategies += [mutant, mutant]
    return st.one_of(strategies)


# Printable ASCII here; header octets outside UTF-8 have their own test below
# (test_exact_case), so that one shared bug does not fail every operation.
header_text = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
idempotency_keys = st.one_of(
    st.none(),
    st.sampled_from(["k1", "k2"]),  # repeats: replays, and reuse with another body
    st.text(header_text, min_size=1, max_size=260),
)
correlation_ids = st.one_of(st.none(), st.text(header_text, min_size=1, max_size=40))


# --- tests -------------------------------------------------------------------------------------------

def _operations() -> Iterator[Any]:
    """Every operation of every service, read from the schemas (no app is started for this)."""
    with tempfile.TemporaryDirectory() as scratch:
        for name in SERVICES:
            app = importlib.import_module(f"services.{name}.app").create_app(settings_for(Path(scratch)))
            for path, methods in app.openapi()["paths"].items():
                for method in methods:
                    yield pytest.param(name, method.upper(), path, id=f"{name} {method.upper()} {path}")


@pytest.fixture(scope="module", autouse=True)
def plain_tracebacks() -> Iterator[None]:
    """A 5xx logs its exception; structlog's default rich traceback (with locals) takes seconds to
    render and would time requests out while Hypothesis shrinks. Plain tracebacks for this module."""
    saved = structlog.get_config()
    structlog.configure(processors=[
        structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
        structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)])
    try:
        yield
    finally:
        structlog.configure(**saved)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    started: dict[str, Service] = {}

    def get(name: str) -> Service:
        if name not in started:
            svc = Service(name, tmp_path_factory.mktemp(f"fuzz-{name}"))
            started[name] = svc
            SEEDERS[name](svc)
        return started[name]

    try:
        yield _Lazy(get)  # type: ignore[misc]
    finally:
        if SHOW_STATS:  # with -s: the statuses each operation answered, to see what the fuzzing reached
            for operation, counts in sorted(STATS.items()):
                print(f"{operation:70} {dict(sorted(counts.items()))}")
        for svc in started.values():
            svc.asgi.stop()


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
        # Mostly an allowed caller; now and then a missing token or a role that is refused.
        pool = refused if data.draw(st.integers(0, 7), label="refused?") == 7 else allowed
        caller = data.draw(st.sampled_from(pool), label="caller")
        headers = svc.headers(caller)
        if method in WRITES:
            key = data.draw(idempotency_keys, label="Idempotency-Key")
            if key is not None:
                headers["Idempotency-Key"] = key
        correlation_id = data.draw(correlation_ids, label="X-Correlation-ID")
        if correlation_id is not None:
            headers["X-Correlation-ID"] = correlation_id
        response = case.call(headers=headers, timeout=REQUEST_TIMEOUT)
        STATS[f"{service} {method} {path}"][response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    fuzz()


# --- exact cases -------------------------------------------------------------------------------------
# Requests the fuzzing found (or that it can only reach by luck at this budget), replayed exactly
# through the same transport and checks. Each must answer without a 5xx and any 4xx as problem+json.

NOT_UTF8 = "\xe9t\xe9"  # "été" in latin-1: octets E9 74 E9, valid in HTTP, not UTF-8

POLICY = {"body": {"quality_weight": "0.60", "price_weight": "0.40"}}
EXACT: list[Any] = [
    pytest.param("enrolment", "GET", "/providers", COMMISSIONER, {"query": {"offset": 2**63}}, {},
                 id="enrolment GET /providers offset=2**63"),
    pytest.param("referral", "GET", "/referrals", BOROUGH, {"query": {"offset": 2**63}}, {},
                 id="referral GET /referrals offset=2**63"),
    # found by the fuzzing: quantizing a huge weight to 2 places raises decimal.InvalidOperation
    pytest.param("matching", "PUT", "/policy", COMMISSIONER,
                 {"body": {"quality_weight": "1e27", "price_weight": "0.40"}}, {},
                 id="matching PUT /policy quality_weight=1e27"),
    # shared/web.py decodes these header octets as UTF-8; any service, any operation
    pytest.param("matching", "PUT", "/policy", COMMISSIONER, POLICY, {"X-Correlation-ID": NOT_UTF8},
                 id="X-Correlation-ID not UTF-8"),
    pytest.param("matching", "PUT", "/policy", COMMISSIONER, POLICY, {"Idempotency-Key": NOT_UTF8},
                 id="Idempotency-Key not UTF-8"),
    pytest.param("matching", "PUT", "/policy", None, POLICY,
                 {"Authorization": f"Bearer {NOT_UTF8}", "Idempotency-Key": "k"},
                 id="Authorization not UTF-8 with an Idempotency-Key"),
]


@pytest.mark.parametrize(("service", "method", "path", "caller", "parts", "extra_headers"), EXACT)
def test_exact_case(services: dict[str, Service], service: str, method: str, path: str, caller: Caller,
                    parts: dict[str, Any], extra_headers: dict[str, str]) -> None:
    svc = services[service]
    operation = svc.schema[path][method]
    if "body" in parts:
        parts = {**parts, "media_type": "application/json"}
    case = operation.Case(**parts)
    headers = {**svc.headers(caller), **extra_headers}
    response = case.call(headers=headers, timeout=REQUEST_TIMEOUT)
    case.validate_response(response, checks=CHECKS, headers=headers)


# --- inputs that were 500s -----------------------------------------------------------------------------
# Issue 12: each of these answered 500 (a lone surrogate cannot be encoded when the event is stored, an
# integer of 2**63 does not fit SQLite's column nor 2**64 orjson's, an instant in the year 1 or 9999 with
# an offset overflows when made UTC). Each must be a 422 naming the field and the rule, recording nothing.

SURROGATE = "\ud800"  # json.dumps writes it escaped, as "\ud800": what a client sends


def _with(template: Callable[[], dict[str, Any]], **changes: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {**template(), **changes}


SUBSCRIPTION = {"url": "https://portal.example/hooks/placematch", "event_types": ["referral.invited"],
                "contact_email": "ops@portal.example"}
WERE_500: list[Any] = [
    pytest.param("enrolment", "POST", "/providers", ANONYMOUS, _with(lambda: application("200001"), name=SURROGATE),
                 "name", "lone_surrogate", id="apply name=lone surrogate"),
    pytest.param("enrolment", "POST", "/providers", ANONYMOUS, _with(lambda: application("200002"), urn=SURROGATE),
                 "urn", "lone_surrogate", id="apply urn=lone surrogate"),
    pytest.param("enrolment", "PATCH", "/providers/{provider_id}", COMMISSIONER, lambda: {"name": SURROGATE},
                 "name", "lone_surrogate", id="update name=lone surrogate"),
    pytest.param("enrolment", "POST", "/providers/{applied_id}/reject", COMMISSIONER, lambda: {"reason": SURROGATE},
                 "reason", "lone_surrogate", id="reject reason=lone surrogate"),
    pytest.param("enrolment", "POST", "/providers", ANONYMOUS, _with(lambda: application("200003"), capacity=2**63),
                 "capacity", "range", id="apply capacity=2**63"),
    pytest.param("enrolment", "POST", "/providers", ANONYMOUS, _with(lambda: application("200004"), capacity=2**64),
                 "capacity", "range", id="apply capacity=2**64"),
    pytest.param("enrolment", "PATCH", "/providers/{provider_id}", COMMISSIONER, lambda: {"capacity": 2**63},
                 "capacity", "range", id="update capacity=2**63"),
    pytest.param("referral", "POST", "/referrals", BOROUGH, _with(referral_body, outcomes=[SURROGATE]),
                 "outcomes.0", "lone_surrogate", id="raise outcomes.0=lone surrogate"),
    pytest.param("referral", "POST", "/referrals/{referral_id}/amend", BOROUGH, lambda: {"outcomes": [SURROGATE]},
                 "outcomes.0", "lone_surrogate", id="amend outcomes.0=lone surrogate"),
    pytest.param("referral", "POST", "/referrals", BOROUGH,
                 _with(referral_body, offer_deadline="9999-12-31T23:00:00-05:00"),
                 "offer_deadline", "range", id="raise offer_deadline=9999-12-31T23:00-05:00"),
    pytest.param("referral", "POST", "/referrals", BOROUGH,
                 _with(referral_body, offer_deadline="0001-01-01T00:30:00+01:00"),
                 "offer_deadline", "range", id="raise offer_deadline=0001-01-01T00:30+01:00"),
    pytest.param("referral", "POST", "/referrals/{referral_id}/amend", BOROUGH,
                 lambda: {"offer_deadline": "9999-12-31T23:00:00-05:00"},
                 "offer_deadline", "range", id="amend offer_deadline=9999-12-31T23:00-05:00"),
    pytest.param("referral", "POST", "/referrals/{referral_id}/amend", BOROUGH,
                 lambda: {"offer_deadline": "0001-01-01T00:30:00+01:00"},
                 "offer_deadline", "range", id="amend offer_deadline=0001-01-01T00:30+01:00"),
    pytest.param("notification", "POST", "/subscriptions", BOROUGH,
                 lambda: {**SUBSCRIPTION, "url": f"https://portal.example/{SURROGATE}"},
                 "url", "lone_surrogate", id="subscribe url=lone surrogate"),
    pytest.param("notification", "POST", "/subscriptions", BOROUGH,
                 lambda: {**SUBSCRIPTION, "event_types": [SURROGATE]},
                 "event_types.0", "lone_surrogate", id="subscribe event_types.0=lone surrogate"),
    pytest.param("notification", "POST", "/subscriptions", BOROUGH,
                 lambda: {**SUBSCRIPTION, "contact_email": f"ops{SURROGATE}@portal.example"},
                 "contact_email", "lone_surrogate", id="subscribe contact_email=lone surrogate"),
    pytest.param("notification", "PATCH", "/subscriptions/{borough_subscription_id}", BOROUGH,
                 lambda: {"contact_email": f"ops{SURROGATE}@portal.example"},
                 "contact_email", "lone_surrogate", id="update subscription contact_email=lone surrogate"),
]


def _path(svc: Service, path: str) -> str:
    """`path` with fresh resources where the fuzzing may have changed the seeded ones' state."""
    ids = {"provider_id": svc.provider, "borough_subscription_id": svc.seeds.get("subscription_id", ["", ""])[-1]}
    if "{applied_id}" in path:
        urn = f"{uuid.uuid4().int % 10**6:06d}"
        ids["applied_id"] = svc.expect(201, "POST", "/providers", json=application(urn))["id"]
    if "{referral_id}" in path:
        ids["referral_id"] = svc.expect(201, "POST", "/referrals", BOROUGH, json=referral_body())["id"]
    return path.format(**ids)


@pytest.mark.parametrize(("service", "method", "path", "caller", "body", "field", "rule"), WERE_500)
def test_input_that_was_a_500_is_422_naming_field_and_rule(
        services: dict[str, Service], service: str, method: str, path: str, caller: Caller,
        body: Callable[[], dict[str, Any]], field: str, rule: str) -> None:
    svc = services[service]
    store = svc.app.state.runtime.store
    path = _path(svc, path)
    before = len(svc.asgi.run(lambda: store.read_all(limit=100_000)))
    response = svc.request(method, path, caller, content=json.dumps(body()).encode(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert (problem["field"], problem["rule"]) == (field, rule), problem
    assert len(svc.asgi.run(lambda: store.read_all(limit=100_000))) == before
