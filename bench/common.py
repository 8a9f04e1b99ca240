"""What every benchmark shares: result rows, the infrastructure it runs on, percentiles, payloads."""
from __future__ import annotations

import os
import platform
import re
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_RATE_LIMIT = "1000000/minute"
"""PLACEMATCH_RATE_LIMIT_EXPENSIVE for the services under load: the limiter is counted, never refuses."""


@dataclass
class Row:
    """One measured figure beside its baseline; `ratio` = ours / baseline (higher is better for rates)."""

    section: str
    metric: str
    ours: float | None
    baseline: float | None = None
    unit: str = "events/s"
    baseline_name: str = ""
    note: str = ""
    lower_is_better: bool = False

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline


@dataclass
class Infra:
    kafka: str | None = None
    database_url: str | None = None
    facts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Infra:
        return cls(kafka=os.environ.get("PLACEMATCH_TEST_KAFKA") or os.environ.get("PLACEMATCH_KAFKA_BOOTSTRAP"),
                   database_url=os.environ.get("PLACEMATCH_TEST_DATABASE_URL"))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=1000, method="inclusive")[min(998, max(0, round(q * 1000) - 1))]


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *_: Any) -> None:
        self.seconds = time.perf_counter() - self.started


# --------------------------------------------------------------------------- PostgreSQL


def pg_parts(url: str) -> dict[str, Any]:
    m = re.match(r"postgresql(?:\+\w+)?://([^:]+):([^@]+)@([^:/]+):(\d+)/(\w+)", url)
    if not m:
        raise ValueError(f"cannot parse {url}")
    user, password, host, port, db = m.groups()
    return {"user": user, "password": password, "host": host, "port": int(port), "dbname": db}


async def fresh_pg_database(url: str, label: str) -> str:
    """A new empty database on the same server; returns its asyncpg URL."""
    import asyncpg

    p = pg_parts(url)
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(user=p["user"], password=p["password"], host=p["host"], port=p["port"],
                                 database=p["dbname"])
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"postgresql+asyncpg://{p['user']}:{p['password']}@{p['host']}:{p['port']}/{name}"


async def pg_version(url: str) -> str:
    import asyncpg

    p = pg_parts(url)
    conn = await asyncpg.connect(user=p["user"], password=p["password"], host=p["host"], port=p["port"],
                                 database=p["dbname"])
    try:
        version = await conn.fetchval("SHOW server_version")
        settings = {r["name"]: r["setting"] for r in await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit')")}
    finally:
        await conn.close()
    return (f"{version.split()[0]} (fsync={settings.get('fsync')}, "
            f"synchronous_commit={settings.get('synchronous_commit')})")


def kafka_version() -> str:
    libs = Path(os.environ.get("PLACEMATCH_KAFKA_HOME") or ROOT / "deploy" / "kafka") / "libs"
    for jar in sorted(libs.glob("kafka_2.13-*.jar")):
        m = re.match(r"kafka_2\.13-([\d.]+)\.jar", jar.name)
        if m:
            return f"{m.group(1)} (KRaft, single node)"
    return "unknown"


def machine_facts(infra: Infra) -> dict[str, str]:
    facts = {
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": _memory(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(terse=True),
    }
    try:
        from importlib.metadata import version

        import eventsourcing  # noqa: F401

        facts["eventsourcing"] = version("eventsourcing")
    except Exception:
        facts["eventsourcing"] = "not installed"
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


# --------------------------------------------------------------------------- payloads


def referral_bodies(count: int, seed: int = 11) -> list[tuple[str, dict[str, Any]]]:
    """(borough, POST /referrals body) pairs from the demo's realistic region."""
    from services.demo import plan_providers, plan_referrals

    today = datetime.now(UTC).date()
    providers = plan_providers(seed, 40, today)
    return [(p.borough, p.body) for p in plan_referrals(seed, count, providers, today)]


def referral_raised_data(count: int, seed: int = 11) -> list[dict[str, Any]]:
    """`referral-raised` data as the referral domain records it (via the real aggregate)."""
    from services.referral.api import ReferralIn
    from services.referral.domain import Referral

    now = datetime.now(UTC)
    out = []
    for borough, body in referral_bodies(count, seed):
        details = ReferralIn.model_validate(body).details()
        out.append(Referral(str(uuid.uuid4())).raise_referral(borough, details, now)[0].data)
    return out


def today() -> date:
    return datetime.now(UTC).date()
