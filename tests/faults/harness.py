"""What the fault suite drives: the five services as `placematch serve` processes on real Kafka and
PostgreSQL, a webhook receiver, a load generator that retries like a real client, and the counts.

Everything here is observed from the outside (HTTP, the webhook receiver, Kafka's committed
offsets, row counts in each service's own database): the suite never reaches into a service.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services import SERVICES
from shared.auth import mint_token
from shared.settings import Settings
from tests.helpers import read_whole_topic, wait_for

ROOT = Path(__file__).resolve().parents[2]
CONSUMER_TOPICS = {  # consumer group (after the prefix) -> the topics it reads (short names)
    "matching-main": ["enrolment", "referral"],
    "referral-main": ["matching", "enrolment", "audit", "notifications", "placement"],
    "notification-main": ["notifications"],
    "placement-main": ["referral", "matching"],
}
WRITE_DEADLINE = 90.0  # a write a client keeps retrying is given up (and the test fails) after this


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bearer(role: str, tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(Settings(), role, tenant)}"}


def asyncpg_dsn(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# --- the services ---------------------------------------------------------------------------------


class ServiceProcess:
    """One `python -m services.cli serve SERVICE` process; the same port and database across restarts.
    Replicas of a service share its database (and its consumer groups) and differ by port."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, replica: int = 0) -> None:
        self.name = name
        self.label = name if replica == 0 else f"{name}#{replica + 1}"
        self.port = free_port()
        self.database_url = env["PLACEMATCH_DATABASE_URL"]
        self.env = {**env, "PLACEMATCH_PORT": str(self.port)}
        self.log = log_dir / f"{name}.log" if replica == 0 else log_dir / f"{name}-{replica + 1}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.gate = Gate()
        self.starts = 0
        self.kills = 0
        self.terminations = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, f"{self.name} is already running"
        with self.log.open("ab") as out:
            out.write(f"\n===== {self.label} start #{self.starts + 1} =====\n".encode())
            out.flush()
            self.process = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", self.name], cwd=ROOT,
                                            env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    async def wait_ready(self, timeout: float = 90.0) -> None:
        async def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, \
                f"{self.label} exited with {self.process and self.process.returncode}:\n{self.log_tail()}"
            try:
                async with httpx.AsyncClient(timeout=3) as client:
                    return (await client.get(f"{self.url}/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(ready, timeout=timeout, interval=0.2, message=f"{self.label} to be ready")

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown hook runs."""
        assert self.process is not None and self.process.poll() is None, f"{self.label} is not running"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.kills += 1

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, as a rolling restart does: requests in flight finish, then it shuts down.
        Returns the exit code (the caller decides whether a slow or unclean exit is a failure)."""
        assert self.running, f"{self.label} is not running"
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.terminations += 1
        return code


class Gate:
    """Lets the fault injector crash a service between two HTTP requests rather than in one.

    Crashes in the middle of a request are `test_write_interrupted_by_a_crash`'s subject; here the
    load only needs the service to be gone (connection refused) while it keeps writing.
    """

    def __init__(self) -> None:
        self.inflight = 0
        self.open = asyncio.Event()
        self.open.set()
        self.idle = asyncio.Event()
        self.idle.set()

    async def __aenter__(self) -> None:
        await self.open.wait()
        self.inflight += 1
        self.idle.clear()

    async def __aexit__(self, *_: Any) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self.idle.set()

    async def close(self) -> None:
        self.open.clear()
        await self.idle.wait()

    def reopen(self) -> None:
        self.open.set()


@dataclass
class Cluster:
    """The services, each as one or more replicas (`placematch serve` processes on one database).

    A client's write goes to one replica and its retries to the next ones in turn, as behind a
    load balancer: a retry with the same Idempotency-Key often lands on another replica."""

    replicas: dict[str, list[ServiceProcess]]
    bootstrap: str
    topic_prefix: str
    _turns: Counter[str] = field(default_factory=Counter)

    @property
    def services(self) -> dict[str, ServiceProcess]:
        """The first replica of each service."""
        return {s: r[0] for s, r in self.replicas.items()}

    @property
    def processes(self) -> list[ServiceProcess]:
        return [p for replicas in self.replicas.values() for p in replicas]

    def turn(self, service: str) -> int:
        """A starting point for the next request's round over the replicas."""
        self._turns[service] += 1
        return self._turns[service]

    def replica(self, service: str, turn: int) -> ServiceProcess:
        replicas = self.replicas[service]
        return replicas[turn % len(replicas)]

    def url(self, service: str) -> str:
        """A running replica of `service`, another one each call (reads: every replica serves them)."""
        replicas = self.replicas[service]
        start = self.turn(service)
        for i in range(len(replicas)):
            candidate = replicas[(start + i) % len(replicas)]
            if candidate.running:
                return candidate.url
        return replicas[start % len(replicas)].url

    def topic(self, short: str) -> str:
        return f"{self.topic_prefix}placematch.{short}"

    async def start_all(self) -> None:
        for service in self.processes:
            service.start()
        for service in self.processes:
            await service.wait_ready()

    async def crash_and_restart(self, name: str, down_for: float, replica: int = 0, *,
                                wait: bool = True) -> float:
        """SIGKILL replica `replica` of `name` between requests, keep it down `down_for` seconds
        (the load meets a refused connection), start it again; return how long until it was ready
        (with `wait=False`, return at once: the caller waits for `wait_ready`)."""
        service = self.replicas[name][replica]
        await service.gate.close()
        try:
            service.kill()
        finally:
            service.gate.reopen()
        await asyncio.sleep(down_for)  # pacing: how long the service stays down
        started = asyncio.get_running_loop().time()
        service.start()
        if wait:
            await service.wait_ready()
        return asyncio.get_running_loop().time() - started

    def stop_all(self) -> None:
        for service in self.processes:
            service.stop()

    # --- the databases, read from outside ---------------------------------------------------------

    async def scalar(self, service: str, sql: str, *args: Any) -> Any:
        import asyncpg

        connection = await asyncpg.connect(asyncpg_dsn(self.services[service].database_url), timeout=10)
        try:
            return await connection.fetchval(sql, *args)
        finally:
            await connection.close()

    async def diagnose(self) -> str:
        """What each service's database connections are doing (for a failure message)."""
        import asyncpg

        lines = []
        for name, service in self.services.items():
            try:
                connection = await asyncpg.connect(asyncpg_dsn(service.database_url), timeout=10)
                try:
                    rows = await connection.fetch("""
                        SELECT state, wait_event_type, wait_event, now() - xact_start AS xact_age,
                               left(regexp_replace(query, '\\s+', ' ', 'g'), 160) AS query
                          FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
                         ORDER BY xact_start NULLS LAST""")
                finally:
                    await connection.close()
            except Exception as error:  # noqa: BLE001 - diagnostics only
                lines.append(f"{name}: cannot inspect ({error!r})")
                continue
            states = Counter(f"{r['state']}/{r['wait_event_type']}:{r['wait_event']}" for r in rows)
            lines.append(f"{name}: {len(rows)} connections {dict(states)}")
            for r in rows[:8]:
                if r["xact_age"] is not None:
                    lines.append(f"    {r['state']} {r['wait_event_type']}:{r['wait_event']} in transaction for "
                                 f"{r['xact_age']}: {r['query']}")
        return "\n".join(lines)

    async def backlog(self) -> dict[str, int]:
        """Work not finished anywhere: outbox rows, consumer lag, pending webhook deliveries."""
        found: dict[str, int] = {}
        for name in SERVICES:
            found[f"{name} outbox"] = int(await self.scalar(name, "SELECT count(*) FROM outbox"))
        found["pending deliveries"] = int(await self.scalar(
            "notification", "SELECT count(*) FROM deliveries WHERE status = 'pending'"))
        found.update(await self.consumer_lag())
        return found

    async def consumer_lag(self) -> dict[str, int]:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        await admin.start()
        await consumer.start()
        try:
            lag: dict[str, int] = {}
            for group, topics in CONSUMER_TOPICS.items():
                committed = await admin.list_consumer_group_offsets(f"{self.topic_prefix}{group}")
                partitions = await self.partitions(topics)
                parts = [TopicPartition(self.topic(t), p) for t in topics for p in partitions[t]]
                assert parts, f"no partitions of {topics}"
                ends = await consumer.end_offsets(parts)
                lag[f"{group} lag"] = sum(
                    ends[tp] - max(committed[tp].offset, 0) if tp in committed else ends[tp] for tp in parts)
            return lag
        finally:
            await consumer.stop()
            await admin.close()

    async def partitions(self, shorts: list[str]) -> dict[str, list[int]]:
        """The partition ids of each of these topics (short names), from the broker's metadata.

        (Not `AIOKafkaConsumer.partitions_for_topic`: it answers from metadata a consumer has
        already fetched, None for a topic it has not subscribed to.)"""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            described = {t["topic"]: t for t in await admin.describe_topics([self.topic(s) for s in shorts])}
        finally:
            await admin.close()
        return {s: sorted(p["partition"] for p in described[self.topic(s)]["partitions"]) for s in shorts}

    async def group_members(self, group: str) -> list[set[tuple[str, int]]]:
        """The partitions each live member of consumer group `group` (after the prefix) holds."""
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            (response,) = await admin.describe_consumer_groups([f"{self.topic_prefix}{group}"])
        finally:
            await admin.close()
        members = []
        for described in response.groups:
            for member in described[5]:  # (member id, client id, host, metadata, assignment)
                assignment = ConsumerProtocolMemberAssignment.decode(member[4]) if member[4] else None
                members.append({(t, p) for t, ps in (assignment.assignment if assignment else ()) for p in ps})
        return members

    async def drained(self, timeout: float = 120.0) -> None:
        """Wait until no work is left anywhere, seen twice in a row."""
        seen: list[bool] = []

        async def idle() -> bool:
            backlog = await self.backlog()
            busy = {k: v for k, v in backlog.items() if v}
            seen.append(not busy)
            assert len(seen) >= 2 and seen[-1] and seen[-2], f"still busy: {busy}"
            return True

        await wait_for(idle, timeout=timeout, interval=0.5, message="every outbox, consumer and delivery to drain")

    async def redeliver(self, shorts: list[str]) -> int:
        """Produce every record already on these topics again (same partition, key, value, headers):
        the duplicate deliveries a producer retry or a consumer rebalance causes. Returns how many."""
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        copied = 0
        try:
            futures = []
            for short in shorts:
                for record in await read_whole_topic(self.bootstrap, self.topic(short)):
                    futures.append(await producer.send(record.topic, value=record.value, key=record.key,
                                                       partition=record.partition,
                                                       headers=list(record.headers or ())))
                    copied += 1
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        return copied


# --- webhooks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Webhook:
    path: str
    webhook_id: str
    body: dict[str, Any]
    raw: bytes


class WebhookReceiver:
    """A real HTTP server: records every POST with its `webhook-id`, answers 204."""

    def __init__(self) -> None:
        self.received: list[Webhook] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    receiver.received.append(Webhook(self.path, self.headers.get("webhook-id") or "",
                                                     json.loads(raw), raw))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> list[Webhook]:
        with self.lock:
            return list(self.received)


# --- the load -------------------------------------------------------------------------------------


class WriteFailed(AssertionError):
    pass


@dataclass
class Ledger:
    """Every accepted write (2xx) and how hard the client had to try."""

    providers: dict[str, int] = field(default_factory=dict)  # provider id -> weekly fee it offers
    referrals: list[str] = field(default_factory=list)
    offers: dict[str, tuple[str, str]] = field(default_factory=dict)  # offer id -> (referral id, provider id)
    awards: dict[str, str] = field(default_factory=dict)  # referral id -> the offer awarded
    attempts: int = 0
    retried: Counter[str] = field(default_factory=Counter)  # why an attempt was retried
    replayed: int = 0  # answers that came back `Idempotent-Replayed: true`
    accepted_by: Counter[str] = field(default_factory=Counter)  # replica -> writes it accepted
    across_replicas: int = 0  # accepted writes whose attempts were answered by more than one replica

    @property
    def accepted(self) -> int:
        return len(self.referrals) + len(self.offers) + len(self.awards)


REFERRAL = {
    "birth_date": "2014-05-02", "gender": "male", "primary_need": "ASD", "secondary_needs": ["SLCN"],
    "placement_type": "day", "required_from": "2027-09-01",
    "location": {"postcode": "CR0 1NX", "lat": 51.372, "lon": -0.099}, "max_travel_km": 30,
    "offer_deadline": "2027-07-01T17:00:00Z", "preferred_provider_id": None,
    "needs_profile": {"physical_health": 0, "emotional_health": 2, "relationships": 1, "risk_taking": 0,
                      "learning_disability": 2, "educational_progress": 2, "self_regulation": 3,
                      "community_engagement": 1, "self_care": 1, "goals_and_aspirations": 1, "voice": 2,
                      "identity": 1},
    "outcomes": ["Attend school full time by spring term"]}
SCHOOL = {
    "kind": "independent_special_school", "lots": ["ASD", "SEMH"], "age_min": 5, "age_max": 19,
    "genders": ["female", "male"], "placement_types": ["day", "residential_38"],
    # every award now takes a place (live capacity, issue 16): room for every award a load test makes
    "capacity": 1000,
    "location": {"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115}, "boroughs_served": [],
    "contact_email": "admissions@school.example"}
BOROUGH = "croydon"


class Client:
    """Writes as a real client does: one Idempotency-Key per write, the same key on every retry,
    retried on a refused/broken connection, a 5xx, or a 409 with Retry-After, until accepted."""

    def __init__(self, cluster: Cluster, ledger: Ledger) -> None:
        self.cluster = cluster
        self.ledger = ledger
        self.http = httpx.AsyncClient(timeout=20)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def write(self, service: str, path: str, body: dict[str, Any] | None, headers: dict[str, str],
                    *, expect: int = 200, key: str | None = None) -> dict[str, Any]:
        key = key or str(uuid.uuid4())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITE_DEADLINE
        delay, last = 0.2, ""
        turn = self.cluster.turn(service)
        answered_by: set[str] = set()
        while True:
            self.ledger.attempts += 1
            replica = self.cluster.replica(service, turn)
            turn += 1  # a retry goes to the next replica
            try:
                async with replica.gate:
                    response = await self.http.post(f"{replica.url}{path}", json=body,
                                                    headers={**headers, "Idempotency-Key": key})
            except httpx.TransportError as error:
                reason, last = f"{type(error).__name__}", f"{type(error).__name__}: {error}"
            else:
                answered_by.add(replica.label)
                if response.status_code == expect:
                    if response.headers.get("idempotent-replayed") == "true":
                        self.ledger.replayed += 1
                    self.ledger.accepted_by[replica.label] += 1
                    if len(answered_by) > 1:
                        self.ledger.across_replicas += 1
                    return response.json()
                if response.status_code == 409 and "retry-after" in response.headers:
                    title = response.json().get("title", "")
                    reason = "409 request in progress" if "in progress" in title.lower() else "409 retry-after"
                elif response.status_code >= 500:
                    reason = f"{response.status_code}"
                else:
                    raise WriteFailed(f"POST {path} (Idempotency-Key {key}) refused: "
                                      f"{response.status_code} {response.text}")
                last = f"{response.status_code} {response.text[:300]}"
            self.ledger.retried[reason] += 1
            if loop.time() > deadline:
                raise WriteFailed(f"POST {path} (Idempotency-Key {key}) not accepted after {WRITE_DEADLINE:g}s "
                                  f"of retries; last answer: {last}")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 2.0)


class Load:
    """A steady stream: a referral every `interval` seconds, and an offer on it from every provider
    (each retried on 409 Retry-After until the invitation has reached the referral service)."""

    def __init__(self, client: Client, interval: float = 0.6, *, award: bool = False) -> None:
        """`award`: the borough also awards each referral, once its shortlist ranks every offer."""
        self.client = client
        self.ledger = client.ledger
        self.interval = interval
        self.award = award
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._failures: list[BaseException] = []

    def start(self) -> None:
        self._stop.clear()
        self._runner = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            task = asyncio.create_task(self._referral_with_offers())
            self._writes.add(task)
            task.add_done_callback(self._done)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)  # pacing only

    def _done(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._failures.append(task.exception())  # type: ignore[arg-type]

    def check(self) -> None:
        if self._failures:
            raise self._failures[0]

    async def _referral_with_offers(self) -> None:
        n = len(self.ledger.referrals) + len(self._writes)
        view = await self.client.write("referral", "/referrals",
                                       {**REFERRAL, "child_ref": f"CR-F-{uuid.uuid4().hex[:10]}-{n}"},
                                       bearer("borough", BOROUGH), expect=201)
        self.ledger.referrals.append(view["id"])
        offers = await asyncio.gather(*(self._offer(view["id"], pid, fee)
                                        for pid, fee in self.ledger.providers.items()))
        if self.award:
            await self._award(view["id"], offers[-1])

    async def _award(self, referral_id: str, offer_id: str) -> None:
        """Not necessarily the top offer, hence the justification; a 409 Retry-After until the
        shortlist ranks every offer is retried by the client."""
        view = await self.client.write("referral", f"/referrals/{referral_id}/award",
                                       {"offer_id": offer_id, "justification": "fault suite: nearest to home"},
                                       bearer("borough", BOROUGH))
        assert view["status"] == "awarded" and view["awarded_offer_id"] == offer_id, view
        self.ledger.awards[referral_id] = offer_id

    async def _offer(self, referral_id: str, provider_id: str, fee: int) -> str:
        view = await self.client.write("referral", f"/referrals/{referral_id}/offers",
                                       {"weekly_fee_pence": fee, "start_date": "2027-09-01", "notes": "fault suite"},
                                       bearer("provider", provider_id), expect=201)
        self.ledger.offers[view["id"]] = (referral_id, provider_id)
        return view["id"]

    def cancel(self) -> None:
        """Abandon the load (a test failed): no write goes on after the client is closed."""
        self._stop.set()
        for task in [self._runner, *self._writes]:
            if task is not None:
                task.cancel()

    async def stop(self) -> None:
        """Stop raising new referrals; wait until every write begun has been accepted."""
        self._stop.set()
        if self._runner is not None:
            await self._runner
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
        self.check()


# --- setting the scene ----------------------------------------------------------------------------


async def enrol_providers(client: Client, receiver: WebhookReceiver, fees: list[int]) -> None:
    """Providers apply, are inspected and approved; each subscribes to `referral.invited` and to
    the award's `offer.accepted` / `offer.not_selected`, and the borough to `shortlist.updated`,
    each at a path of its own on the receiver."""
    commissioner = bearer("commissioner", "region")
    for i, fee in enumerate(fees):
        provider = await client.write("enrolment", "/providers",
                                      {**SCHOOL, "name": f"Fault School {i}", "urn": f"90{i:04d}"}, {}, expect=201)
        pid = provider["id"]
        await client.write("enrolment", f"/providers/{pid}/inspections",
                           {"framework": "ofsted_legacy", "overall": "good", "inspected_on": "2024-03-01"},
                           commissioner)
        await client.write("enrolment", f"/providers/{pid}/approve", None, commissioner)
        await client.write("notification", "/subscriptions",
                           {"url": f"{receiver.base}/hooks/provider/{pid}",
                            "event_types": ["referral.invited", "offer.accepted", "offer.not_selected"]},
                           bearer("provider", pid), expect=201)
        client.ledger.providers[pid] = fee
    await client.write("notification", "/subscriptions",
                       {"url": f"{receiver.base}/hooks/borough/{BOROUGH}", "event_types": ["shortlist.updated"]},
                       bearer("borough", BOROUGH), expect=201)


# --- counting -------------------------------------------------------------------------------------


@dataclass
class Tally:
    """One kind of downstream effect: how many were expected, missing, or there twice."""

    expected: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)


class Audit:
    """Counts every accepted write's effects in the projections and at the webhook receiver."""

    def __init__(self, cluster: Cluster, ledger: Ledger, receiver: WebhookReceiver) -> None:
        self.cluster = cluster
        self.ledger = ledger
        self.receiver = receiver
        self.tallies: dict[str, Tally] = {}

    def tally(self, name: str) -> Tally:
        return self.tallies.setdefault(name, Tally())

    async def _get(self, http: httpx.AsyncClient, service: str, path: str, headers: dict[str, str]) -> Any:
        response = await http.get(f"{self.cluster.url(service)}{path}", headers=headers)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    def offers_of(self) -> dict[str, set[str]]:
        by_referral: dict[str, set[str]] = {rid: set() for rid in self.ledger.referrals}
        for offer_id, (rid, _) in self.ledger.offers.items():
            by_referral[rid].add(offer_id)
        return by_referral

    async def count(self) -> None:
        self.tallies = {}
        croydon, auditor = bearer("borough", BOROUGH), bearer("auditor", "region")
        providers = set(self.ledger.providers)
        offers_of = self.offers_of()
        async with httpx.AsyncClient(timeout=30) as http:
            # referral: the borough's list holds each accepted referral once, with its accepted offers
            seen: Counter[str] = Counter()
            offers_seen: dict[str, Counter[str]] = defaultdict(Counter)
            offset = 0
            while True:
                page = await self._get(http, "referral", f"/referrals?limit=200&offset={offset}", croydon)
                for item in page["items"]:
                    seen[item["id"]] += 1
                    for offer in item["offers"]:
                        offers_seen[item["id"]][offer["id"]] += 1
                if len(page["items"]) < 200:
                    break
                offset += 200
            t = self.tally("referral: referrals")
            t.expected = len(self.ledger.referrals)
            t.lost = [r for r in self.ledger.referrals if r not in seen]
            t.duplicated = [r for r, n in seen.items() if n > 1 or r not in offers_of]
            t = self.tally("referral: offers")
            t.expected = len(self.ledger.offers)
            for rid, accepted in offers_of.items():
                t.lost += sorted(accepted - set(offers_seen[rid]))
                t.duplicated += sorted(o for o, n in offers_seen[rid].items() if n > 1 or o not in accepted)

            awards = self.tally("referral: awards")
            awards.expected = len(self.ledger.awards)
            for rid, offer_id in self.ledger.awards.items():
                view = await self._get(http, "referral", f"/referrals/{rid}", croydon)
                if view["status"] != "awarded" or view.get("awarded_offer_id") != offer_id:
                    awards.lost.append(f"{rid}: {view['status']} {view.get('awarded_offer_id')}")

            invites, shortlist_entries, rankings = (self.tally("matching: invitations"),
                                                    self.tally("matching: shortlist entries"),
                                                    self.tally("matching: shortlist-ranked decisions"))
            for rid in self.ledger.referrals:
                # matching: every provider invited once; one shortlist entry per accepted offer
                eligible = await self._get(http, "matching", f"/referrals/{rid}/eligible-providers", croydon)
                invited = Counter(p["provider_id"] for p in eligible["providers"])
                shortlist = await self._get(http, "matching", f"/referrals/{rid}/shortlist", croydon)
                entries = Counter(e["offer_id"] for e in shortlist["entries"])
                shortlist_entries.expected += len(offers_of[rid])
                shortlist_entries.lost += [f"{rid}/{o}" for o in sorted(offers_of[rid] - set(entries))]
                shortlist_entries.duplicated += [f"{rid}/{o}" for o, n in entries.items()
                                                 if n > 1 or o not in offers_of[rid]]
                # the evidence pack: the decisions matching recorded, as the referral service heard them
                pack = await self._get(http, "referral", f"/referrals/{rid}/audit", auditor)
                newly = Counter(p for step in pack["invitations"] for p in step["details"]["newly_invited"] or [])
                invites.expected += len(providers)
                invites.lost += [f"{rid}/{p}" for p in sorted(providers - set(newly) - set(invited))]
                invites.duplicated += [f"{rid}/{p}" for p, n in newly.items() if n > 1 or p not in providers]
                invites.duplicated += [f"{rid}/{p} (eligible-providers)" for p, n in invited.items() if n > 1]
                ranked = Counter(frozenset(e["offer_id"] for e in step["shortlist"]) for step in pack["shortlists"])
                rankings.expected += len(offers_of[rid])  # each accepted offer re-ranks once
                rankings.lost += [f"{rid}: {len(offers_of[rid])} offers, {len(ranked)} distinct rankings"] \
                    if len(ranked) < len(offers_of[rid]) else []
                rankings.duplicated += [f"{rid}: ranking of {len(k)} offers recorded {n} times"
                                        for k, n in ranked.items() if n > 1]
                awarded = [step["details"]["offer_id"] for step in pack["timeline"]
                           if step["type"] == "placement-awarded"]
                if len(awarded) > 1 or (awarded and awarded != [self.ledger.awards.get(rid)]):
                    awards.duplicated.append(f"{rid}: awards recorded {awarded}")
        self._count_webhooks(offers_of)

    def _count_webhooks(self, offers_of: dict[str, set[str]]) -> None:
        received = self.receiver.snapshot()
        bodies: dict[str, set[bytes]] = defaultdict(set)
        for hook in received:
            bodies[hook.webhook_id].add(hook.raw)
        t = self.tally("webhooks: one body per webhook-id")
        t.expected = len(bodies)
        t.duplicated = [wid for wid, raws in bodies.items() if len(raws) > 1 or not wid]

        # referral.invited: per (provider, referral) exactly one webhook-id
        invited: dict[tuple[str, str], set[str]] = defaultdict(set)
        # shortlist.updated to the borough: per (referral, shortlist content) exactly one webhook-id
        ranked: dict[tuple[str, frozenset[str]], set[str]] = defaultdict(set)
        # an award: per (provider, referral) one offer.accepted or offer.not_selected webhook-id
        outcome: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        stray: list[str] = []
        for hook in received:
            kind, data = hook.body.get("type"), hook.body.get("data") or {}
            if kind == "referral.invited" and hook.path.startswith("/hooks/provider/"):
                invited[(hook.path.rsplit("/", 1)[1], data.get("referral_id"))].add(hook.webhook_id)
            elif kind in ("offer.accepted", "offer.not_selected") and hook.path.startswith("/hooks/provider/"):
                outcome[(kind, hook.path.rsplit("/", 1)[1], data.get("referral_id"))].add(hook.webhook_id)
            elif kind == "shortlist.updated" and hook.path == f"/hooks/borough/{BOROUGH}":
                ranked[(data.get("referral_id"), frozenset(e["offer_id"] for e in data.get("entries", [])))].add(
                    hook.webhook_id)
            else:
                stray.append(f"{hook.path} {kind} {hook.webhook_id}")

        t = self.tally("webhooks: referral.invited")
        expected = {(pid, rid) for rid in self.ledger.referrals for pid in self.ledger.providers}
        t.expected = len(expected)
        t.lost = [f"{rid} -> {pid}" for pid, rid in sorted(expected - set(invited))]
        t.duplicated = [f"{rid} -> {pid}: {sorted(ids)}" for (pid, rid), ids in invited.items() if len(ids) > 1]
        t.duplicated += [f"unexpected {rid} -> {pid}" for pid, rid in set(invited) - expected]
        t.duplicated += stray

        t = self.tally("webhooks: shortlist.updated")
        t.expected = sum(len(o) for o in offers_of.values())
        contents: dict[str, int] = Counter(rid for rid, _ in ranked)
        for rid, accepted in offers_of.items():
            if contents.get(rid, 0) < len(accepted):
                t.lost.append(f"{rid}: {len(accepted)} offers, {contents.get(rid, 0)} distinct shortlists")
        t.duplicated = [f"{rid} ({len(k)} entries): {sorted(ids)}" for (rid, k), ids in ranked.items() if len(ids) > 1]
        t.duplicated += [f"{rid}: shortlist with offers never accepted" for (rid, k) in ranked
                         if rid not in offers_of or not k <= offers_of[rid]]

        t = self.tally("webhooks: offer.accepted / offer.not_selected")
        providers_of = {rid: {p: o for o, (r, p) in self.ledger.offers.items() if r == rid}
                        for rid in self.ledger.awards}
        expected_outcomes = {("offer.accepted" if o == self.ledger.awards[rid] else "offer.not_selected", p, rid)
                             for rid, offers in providers_of.items() for p, o in offers.items()}
        t.expected = len(expected_outcomes)
        t.lost = [f"{kind} {rid} -> {pid}" for kind, pid, rid in sorted(expected_outcomes - set(outcome))]
        t.duplicated = [f"{kind} {rid} -> {pid}: {sorted(ids)}" for (kind, pid, rid), ids in outcome.items()
                        if len(ids) > 1]
        t.duplicated += [f"unexpected {kind} {rid} -> {pid}" for kind, pid, rid in set(outcome) - expected_outcomes]

        self.webhook_ids = len(bodies)
        redelivered = sum(n - 1 for n in Counter(h.webhook_id for h in received).values() if n > 1)
        self.redelivered = redelivered

    @property
    def lost(self) -> int:
        return sum(len(t.lost) for t in self.tallies.values())

    @property
    def duplicated(self) -> int:
        return sum(len(t.duplicated) for t in self.tallies.values())

    async def complete(self) -> bool:
        """Everything accepted has its effects (used to wait for convergence; duplicates are
        judged only after the system has drained)."""
        await self.count()
        missing = {name: t.lost[:3] for name, t in self.tallies.items() if t.lost}
        assert not missing, f"not there yet: {missing}"
        return True

    def report(self, title: str) -> str:
        lines = [f"\n=== {title}: accepted writes {self.ledger.accepted} "
                 f"({len(self.ledger.referrals)} referrals, {len(self.ledger.offers)} offers, "
                 f"{len(self.ledger.awards)} awards; "
                 f"{self.ledger.attempts} HTTP attempts, retried {dict(self.ledger.retried)}, "
                 f"{self.ledger.replayed} idempotent replays) -> lost {self.lost}, duplicated {self.duplicated}"]
        if len(self.ledger.accepted_by) > len(SERVICES):
            lines.append(f"    accepted by replica: {dict(sorted(self.ledger.accepted_by.items()))}; "
                         f"{self.ledger.across_replicas} writes answered by two replicas across their retries")
        for name, t in self.tallies.items():
            lines.append(f"    {name:42} expected {t.expected:5}  lost {len(t.lost):3}  "
                         f"duplicated {len(t.duplicated):3}")
        lines.append(f"    webhook redeliveries of one webhook-id (receivers de-duplicate): {self.redelivered}")
        return "\n".join(lines)

    def problems(self) -> str:
        out = []
        for name, t in self.tallies.items():
            if t.lost:
                out.append(f"{name}: LOST {len(t.lost)}, e.g. {t.lost[:5]}")
            if t.duplicated:
                out.append(f"{name}: DUPLICATED {len(t.duplicated)}, e.g. {t.duplicated[:5]}")
        return "\n".join(out)


SECRETS_KEY = base64.b64encode(os.urandom(32)).decode()


def service_env(*, bootstrap: str, database_url: str, topic_prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLACEMATCH_") or k.startswith("PLACEMATCH_TEST_")}
    for name in ("PLACEMATCH_JWT_SECRET", "PLACEMATCH_JWT_ALGORITHM"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env | {
        "PLACEMATCH_SECRETS_KEY": SECRETS_KEY,  # `serve notification` requires one; the same across restarts
        "PLACEMATCH_KAFKA_BOOTSTRAP": bootstrap,
        "PLACEMATCH_DATABASE_URL": database_url,
        "PLACEMATCH_TOPIC_PREFIX": topic_prefix,
        "PLACEMATCH_WEBHOOK_ALLOW_PRIVATE": "true",
        "PLACEMATCH_EMAIL_ENABLED": "false",
        "PLACEMATCH_RELAY_POLL_SECONDS": "0.2",
        "PLACEMATCH_DELIVERY_POLL_SECONDS": "0.2",
        "PLACEMATCH_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        "PLACEMATCH_WEBHOOK_RETRY_FACTOR": "2",
        "PLACEMATCH_WEBHOOK_RETRY_MAX_DELAY_SECONDS": "2",
        "PLACEMATCH_WEBHOOK_MAX_ATTEMPTS": "100",
        "PLACEMATCH_WEBHOOK_TIMEOUT_SECONDS": "3",
        "PLACEMATCH_CONSUMER_RETRY_BASE_SECONDS": "0.1",
        "PLACEMATCH_DEADLINE_CHECK_SECONDS": "30",
        "PLACEMATCH_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
