"""API: `POST /referrals` on the referral service vs a bare FastAPI endpoint with the same request
model and token check but no store (bench/bare_app.py), both under uvicorn in a subprocess, loaded
by bench/loadgen.py in another process (closed loop, keep-alive connections, same bodies).

The referral service runs as in production when Kafka and PostgreSQL are available (store +
outbox on PostgreSQL, relay to Kafka, its consumers running), else embedded (SQLite, local bus).
"""
from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from shared.auth import mint_token
from shared.settings import Settings

from .common import BENCH_RATE_LIMIT, Infra, Row, fresh_pg_database, referral_bodies
from .procs import PYTHON, Process, free_port

CONNECTIONS = 16
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"


async def _load(port: int, requests: list[dict[str, Any]], duration: float, warmup: float, tmp: Path) -> dict[str, Any]:
    config = tmp / f"load-{port}.json"
    config.write_text(json.dumps({"host": "127.0.0.1", "port": port, "path": "/referrals", "requests": requests,
                                  "connections": CONNECTIONS, "duration": duration, "warmup": warmup}))
    proc = await asyncio.create_subprocess_exec(PYTHON, "-m", "bench.loadgen", str(config),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                cwd=str(Path(__file__).resolve().parent.parent))
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {err.decode()[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


async def run(infra: Infra, quick: bool) -> list[Row]:
    duration, warmup = (5.0, 2.0) if quick else (15.0, 3.0)
    settings = Settings(jwt_secret=SECRET)
    bodies = referral_bodies(500)
    tokens = {b: mint_token(settings, "borough", b) for b, _ in bodies}
    requests = [{"token": tokens[b], "body": body} for b, body in bodies]
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmpdir:
        tmp = Path(tmpdir)
        env = {"PLACEMATCH_JWT_SECRET": SECRET, "PLACEMATCH_LOG_LEVEL": "WARNING",
               "PLACEMATCH_DATA_DIR": str(tmp / "var"),
               # the limiter stays in the measured path, but the load is far above a borough's limit
               "PLACEMATCH_RATE_LIMIT_EXPENSIVE": BENCH_RATE_LIMIT}
        if infra.kafka and infra.database_url:
            env |= {"PLACEMATCH_KAFKA_BOOTSTRAP": infra.kafka,
                    "PLACEMATCH_TOPIC_PREFIX": f"bench-{uuid.uuid4().hex[:6]}.",
                    "PLACEMATCH_DATABASE_URL": await fresh_pg_database(infra.database_url, "api")}
            mode = "PostgreSQL + Kafka"
        else:
            mode = "SQLite + local bus"
        results: dict[str, dict[str, Any]] = {}
        for name, args in (
            ("placematch", [PYTHON, "-m", "services.cli", "serve", "referral"]),
            ("bare", [PYTHON, "-m", "uvicorn", "bench.bare_app:app", "--log-level", "warning"]),
        ):
            port = free_port()
            proc_env = {**env, "PLACEMATCH_PORT": str(port)}
            if name == "bare":
                args = [*args, "--port", str(port)]
            proc = Process(args, proc_env, tmp / f"{name}.log")
            try:
                await proc.wait_http(port, "/health" if name == "placematch" else "/docs")
                results[name] = await _load(port, requests, duration, warmup, tmp)
            finally:
                proc.stop()
    ours, bare = results["placematch"], results["bare"]
    note = f"{CONNECTIONS} connections, {duration:.0f} s after {warmup:.0f} s warm-up; referral on {mode}"
    if ours["errors"] or bare["errors"]:
        note += f"; errors ours={ours['errors']} {ours['statuses']} bare={bare['errors']}"
    return [
        Row("api", "POST /referrals throughput", ours["rps"], bare["rps"], "req/s", "bare FastAPI, same model + auth",
            note),
        Row("api", "POST /referrals p50 latency", ours["p50_ms"], bare["p50_ms"], "ms", "bare FastAPI",
            lower_is_better=True),
        Row("api", "POST /referrals p99 latency", ours["p99_ms"], bare["p99_ms"], "ms", "bare FastAPI",
            lower_is_better=True),
    ]
