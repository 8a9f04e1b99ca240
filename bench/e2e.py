"""End to end on Kafka + PostgreSQL: referrals raised per second in, provider webhooks out, and the
latency from raising a referral (the POST leaving the bench) to its first webhook arriving at a
real HTTP receiver in the bench process.

The four services run each in its own `placematch serve` subprocess with its own PostgreSQL
database and a fresh topic prefix. Setup: the demo region's providers apply, are inspected and
approved; every approved provider subscribes to `referral.invited` and every borough to
`referral.no_eligible_providers`, so each referral yields at least one webhook. Then, per rate,
referrals are raised open-loop at that rate for a few seconds and the run waits for the webhooks.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from services import SERVICES
from services.demo import BOROUGHS, plan_providers, plan_referrals
from shared.auth import mint_token
from shared.settings import Settings

from .common import BENCH_RATE_LIMIT, Infra, Row, fresh_pg_database, percentile, today
from .procs import PYTHON, Process, free_port

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
SECRETS_KEY = base64.b64encode(os.urandom(32)).decode()
RATES = (10, 50, 100)
# For development: PLACEMATCH_BENCH_E2E_RATES=50 (comma-separated) and PLACEMATCH_BENCH_E2E_SECONDS=6 run
# shorter waves; PLACEMATCH_BENCH_E2E_STAGES=1 prints where each wave's referrals spent their time.
ENV_RATES = "PLACEMATCH_BENCH_E2E_RATES"
ENV_SECONDS = "PLACEMATCH_BENCH_E2E_SECONDS"
ENV_STAGES = "PLACEMATCH_BENCH_E2E_STAGES"


class Receiver:
    """Tiny HTTP/1.1 server: notes when the first webhook for each referral arrives."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.arrivals: list[float] = []
        self._server: asyncio.AbstractServer | None = None
        self.base = ""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self.base

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                now = time.perf_counter()
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                self.arrivals.append(now)
                try:
                    rid = (json.loads(body).get("data") or {}).get("referral_id")
                except ValueError:
                    rid = None
                if rid and rid not in self.first:
                    self.first[rid] = now
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _pids_of(parent: int) -> list[int]:
    """`parent` and its direct children (PostgreSQL's backends are children of the postmaster)."""
    pids = [parent]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return pids


class CpuMeter:
    """CPU seconds used by the four services, PostgreSQL and Kafka between two `sample`s (Linux only:
    elsewhere every figure is 0). A backend that exits between samples takes its CPU with it."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def _groups(self) -> dict[str, list[int]]:
        groups = {service: [proc.proc.pid] for service, proc in zip(SERVICES, self.stack.procs, strict=True)}
        pg_dir = os.environ.get("PLACEMATCH_TEST_POSTGRES_DIR")
        for pid_file in (Path(pg_dir) / "postmaster.pid", Path(pg_dir) / "data" / "postmaster.pid") if pg_dir else ():
            if pid_file.exists():
                groups["postgresql"] = _pids_of(int(pid_file.read_text().split()[0]))
                break
        kafka_dir = os.environ.get("PLACEMATCH_TEST_KAFKA_DIR")
        if kafka_dir:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        if kafka_dir.encode() in (entry / "cmdline").read_bytes() and b"java" in (
                                entry / "cmdline").read_bytes():
                            groups["kafka"] = [int(entry.name)]
                    except OSError:
                        continue
        return groups

    def sample(self) -> dict[str, float]:
        return {name: sum(_cpu_seconds(pid) for pid in pids) for name, pids in self._groups().items()}

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: max(0.0, after[name] - before.get(name, 0.0)) for name in after}


class Stack:
    def __init__(self, infra: Infra, tmp: Path) -> None:
        self.infra, self.tmp = infra, tmp
        self.ports = {s: free_port() for s in SERVICES}
        self.procs: list[Process] = []
        self.databases: dict[str, str] = {}
        self.settings = Settings(jwt_secret=SECRET)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    async def start(self) -> None:
        assert self.infra.kafka and self.infra.database_url
        prefix = f"bench-{uuid.uuid4().hex[:6]}."
        for service in SERVICES:
            self.databases[service] = await fresh_pg_database(self.infra.database_url, service)
            env = {"PLACEMATCH_JWT_SECRET": SECRET, "PLACEMATCH_SECRETS_KEY": SECRETS_KEY,
                   "PLACEMATCH_KAFKA_BOOTSTRAP": self.infra.kafka,
                   "PLACEMATCH_TOPIC_PREFIX": prefix, "PLACEMATCH_PORT": str(self.ports[service]),
                   "PLACEMATCH_DATABASE_URL": self.databases[service],
                   "PLACEMATCH_WEBHOOK_ALLOW_PRIVATE": "true", "PLACEMATCH_LOG_LEVEL": "WARNING",
                   "PLACEMATCH_EMAIL_ENABLED": "false", "PLACEMATCH_DATA_DIR": str(self.tmp / "var"),
                   "PLACEMATCH_RATE_LIMIT_EXPENSIVE": BENCH_RATE_LIMIT}
            self.procs.append(Process([PYTHON, "-m", "services.cli", "serve", service], env,
                                      self.tmp / f"{service}.log"))
        for service, proc in zip(SERVICES, self.procs, strict=True):
            await proc.wait_http(self.ports[service])

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


async def _call(client: httpx.AsyncClient, method: str, url: str, token: str | None, body: Any = None) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    for attempt in range(6):
        response = await client.request(method, url, json=body, headers=headers)
        if response.status_code < 400:
            return response.json() if response.content else None
        if response.status_code in (409, 500, 503) and attempt < 5:
            await asyncio.sleep(0.2 * 2 ** attempt)
            continue
        raise RuntimeError(f"{method} {url}: {response.status_code} {response.text[:300]}")


async def _setup(stack: Stack, client: httpx.AsyncClient, receiver: Receiver, providers: int) -> int:
    s = stack.settings
    commissioner = mint_token(s, "commissioner", "region")
    plans = [p for p in plan_providers(7, providers, today()) if p.decision == "approve"]
    gate = asyncio.Semaphore(8)

    async def enrol(plan: Any) -> None:
        async with gate:
            created = await _call(client, "POST", f"{stack.url('enrolment')}/providers", None, plan.application())
            pid = created["id"]
            for inspection in plan.inspections:
                await _call(client, "POST", f"{stack.url('enrolment')}/providers/{pid}/inspections", commissioner,
                            inspection)
            for outcome in plan.outcomes:
                await _call(client, "POST", f"{stack.url('enrolment')}/providers/{pid}/outcomes", commissioner, outcome)
            await _call(client, "POST", f"{stack.url('enrolment')}/providers/{pid}/approve", commissioner,
                        {"reason": "bench"})
            await _call(client, "POST", f"{stack.url('notification')}/subscriptions", mint_token(s, "provider", pid),
                        {"url": f"{receiver.base}/p/{pid}", "event_types": ["referral.invited"]})

    await asyncio.gather(*(enrol(p) for p in plans))
    for borough in BOROUGHS:
        await _call(client, "POST", f"{stack.url('notification')}/subscriptions", mint_token(s, "borough", borough),
                    {"url": f"{receiver.base}/b/{borough}", "event_types": ["referral.no_eligible_providers"]})
    return len(plans)


async def _wave(stack: Stack, client: httpx.AsyncClient, receiver: Receiver, bodies: Any,
                tokens: dict[str, str], rate: float, seconds: float, drain: float) -> dict[str, Any]:
    sent: dict[str, float] = {}
    failures: dict[str, int] = {}
    count = int(rate * seconds)

    async def one(borough: str, body: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            response = await client.post(f"{stack.url('referral')}/referrals", json=body,
                                         headers={"authorization": f"Bearer {tokens[borough]}"})
        except httpx.HTTPError as error:
            failures[type(error).__name__] = failures.get(type(error).__name__, 0) + 1
            return
        if response.status_code == 201:
            sent[response.json()["id"]] = started
        else:
            failures[str(response.status_code)] = failures.get(str(response.status_code), 0) + 1

    arrivals_before = len(receiver.arrivals)
    t0 = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        borough, body = next(bodies)
        tasks.append(asyncio.create_task(one(borough, body)))
    await asyncio.gather(*tasks)
    send_window = time.perf_counter() - t0
    deadline = time.perf_counter() + drain
    while time.perf_counter() < deadline and not all(r in receiver.first for r in sent):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    latencies = [(receiver.first[r] - t) * 1000 for r, t in sent.items() if r in receiver.first]
    arrivals = [a for a in receiver.arrivals[arrivals_before:] if a >= t0]
    out_window = (max(arrivals) - t0) if arrivals else None
    return {"referrals": list(sent), "offered": count, "accepted": len(sent), "failed": failures,
            "in_rate": len(sent) / send_window,
            "webhooks": len(arrivals), "out_rate": len(arrivals) / out_window if out_window else None,
            "answered": len(latencies), "p50": percentile(latencies, 0.50), "p95": percentile(latencies, 0.95),
            "p99": percentile(latencies, 0.99)}


async def _stages(stack: Stack, referral_ids: list[str]) -> str:
    """Where a wave's referrals spent their time, from the events' own timestamps: raised (referral
    store) → matched (matching store) → first delivery scheduled → first delivery succeeded
    (notification store). Milliseconds, p50/p95 over the referrals that reached each stage."""
    stages = await _stage_times(stack, referral_ids)
    raised, matched, scheduled, succeeded = (stages[k] for k in ("raised", "matched", "scheduled", "delivered"))
    parts = []
    for label, a, b in (("raised→matched", raised, matched), ("matched→scheduled", matched, scheduled),
                        ("scheduled→succeeded", scheduled, succeeded), ("raised→succeeded", raised, succeeded)):
        lags = [(b[r] - a[r]) * 1000 for r in referral_ids if r in a and r in b]
        parts.append(f"{label} n={len(lags)} p50={percentile(lags, 0.5) or 0:.0f} "
                     f"p95={percentile(lags, 0.95) or 0:.0f}")
    spans = [f"{label} {rate:.1f}/s" for label, rate in _throughputs(
        referral_ids, raised, matched, scheduled, succeeded).items() if rate is not None]
    return "; ".join(parts) + " | referrals through each stage: " + ", ".join(spans)


async def _stage_times(stack: Stack, referral_ids: list[str]) -> dict[str, dict[str, float]]:
    """{stage: {referral id: when it passed the stage}}, from the events' own timestamps."""
    from datetime import datetime

    import asyncpg

    from .common import pg_parts

    async def query(service: str, sql: str) -> list[Any]:
        p = pg_parts(stack.databases[service].replace("postgresql+asyncpg", "postgresql"))
        conn = await asyncpg.connect(user=p["user"], password=p["password"], host=p["host"], port=p["port"],
                                     database=p["dbname"])
        try:
            return list(await conn.fetch(sql, referral_ids))
        finally:
            await conn.close()

    def t(value: str) -> float:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

    raised = {r["stream_id"]: t(r["time"]) for r in await query("referral", (
        "SELECT stream_id, time FROM events WHERE type = 'referral-raised' AND stream_id = ANY($1::text[])"))}
    matched = {r["stream_id"]: t(r["time"]) for r in await query("matching", (
        "SELECT stream_id, min(time) AS time FROM events WHERE type = 'referral-matched' "
        "AND stream_id = ANY($1::text[]) GROUP BY stream_id"))}
    delivery = await query("notification", (
        "SELECT d.referral_id, min(s.time) AS scheduled, min(o.time) AS succeeded FROM deliveries d "
        "JOIN events s ON s.stream_id = d.id AND s.type = 'delivery-scheduled' "
        "LEFT JOIN events o ON o.stream_id = d.id AND o.type = 'delivery-succeeded' "
        "WHERE d.referral_id = ANY($1::text[]) GROUP BY d.referral_id"))
    return {"raised": raised, "matched": matched,
            "scheduled": {r["referral_id"]: t(r["scheduled"]) for r in delivery},
            "delivered": {r["referral_id"]: t(r["succeeded"]) for r in delivery if r["succeeded"]}}


def _throughputs(referral_ids: list[str], *stages: dict[str, float]) -> dict[str, float | None]:
    """Referrals/s through each stage (raised, matched, scheduled, delivered): how many passed it over
    the span between the first and the last to pass it. The first stage slower than the offered rate
    is the bottleneck."""
    rates: dict[str, float | None] = {}
    for label, times in zip(("raised", "matched", "scheduled", "delivered"), stages, strict=True):
        got = [times[r] for r in referral_ids if r in times]
        rates[label] = len(got) / (max(got) - min(got)) if len(got) > 1 and max(got) > min(got) else None
    return rates


async def run(infra: Infra, quick: bool) -> list[Row]:
    if not (infra.kafka and infra.database_url):
        return [Row("e2e", "referral -> webhook", None, note="needs Kafka and PostgreSQL (run via deploy/test-env.sh)")]
    seconds, drain, providers = (5.0, 30.0, 30) if quick else (12.0, 60.0, 60)
    seconds = float(os.environ.get(ENV_SECONDS) or seconds)
    rates = tuple(int(r) for r in os.environ.get(ENV_RATES, "").split(",") if r.strip()) or RATES
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmpdir:
        stack = Stack(infra, Path(tmpdir))
        receiver = Receiver()
        await receiver.start()
        try:
            await stack.start()
            async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=400)) as client:
                approved = await _setup(stack, client, receiver, providers)
                tokens = {b: mint_token(stack.settings, "borough", b) for b in BOROUGHS}
                provider_plans = plan_providers(7, providers, today())
                bodies = iter([(p.borough, p.body) for p in plan_referrals(7, 4000, provider_plans, today())])
                warm = await _wave(stack, client, receiver, bodies, tokens, 2, 3, 60)
                if not warm["answered"]:
                    raise RuntimeError(f"no webhook arrived during warm-up; logs in {tmpdir}")
                meter = CpuMeter(stack)
                for rate in rates:
                    if os.environ.get(ENV_STAGES):
                        print(f"e2e @{rate}/s wave starting", flush=True)
                    before = meter.sample()
                    w = await _wave(stack, client, receiver, bodies, tokens, rate, seconds, drain)
                    spent = CpuMeter.spent(before, meter.sample())
                    if os.environ.get(ENV_STAGES):
                        print(f"e2e @{rate}/s stages: {await _stages(stack, w['referrals'])}", flush=True)
                    stages = await _stage_times(stack, w["referrals"])
                    through = _throughputs(w["referrals"], *stages.values())
                    note = (f"{w['accepted']}/{w['offered']} raised in {seconds:.0f} s, {w['answered']} got a webhook "
                            f"within {drain:.0f} s; {w['webhooks']} webhooks")
                    if w["failed"]:
                        note += "; POSTs failed: " + ", ".join(f"{n}× {why}" for why, n in sorted(w["failed"].items()))
                    rows += [
                        Row("e2e", f"@{rate}/s referrals raised (in)", w["in_rate"], float(rate), "referrals/s",
                            "offered rate", note),
                        Row("e2e", f"@{rate}/s webhooks received (out)", w["out_rate"], None, "webhooks/s"),
                        Row("e2e", f"@{rate}/s raised→webhook p50", w["p50"], None, "ms", lower_is_better=True),
                        Row("e2e", f"@{rate}/s raised→webhook p95", w["p95"], None, "ms", lower_is_better=True),
                        Row("e2e", f"@{rate}/s raised→webhook p99", w["p99"], None, "ms", lower_is_better=True),
                    ]
                    referrals = max(1, w["accepted"])
                    services = sum(spent.get(service, 0.0) for service in SERVICES)
                    rows.append(Row(
                        "e2e", f"@{rate}/s CPU per referral (services)", services * 1000 / referrals, None, "ms",
                        lower_is_better=True,
                        note="; ".join(f"{name} {seconds_ * 1000 / referrals:.1f}" for name, seconds_ in spent.items())
                        + " ms per referral, from the POSTs to the last webhook (or the drain timeout)"))
                    rows += [Row("e2e", f"@{rate}/s stage throughput: {stage}", value, float(rate), "referrals/s",
                                 "offered rate", note=f"{len(stages[stage])} referrals passed it")
                             for stage, value in through.items()]
            rows[0].note += f"; {approved} approved providers subscribed, Kafka + PostgreSQL, 4 serve processes"
        finally:
            stack.stop()
            await receiver.stop()
    return rows
