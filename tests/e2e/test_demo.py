"""`placematch demo` against a real `placematch up`: the region it builds is visible through the APIs."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import httpx
import pytest
from rich.console import Console

from shared.auth import mint_token
from shared.demo import BOROUGHS, run_demo
from shared.settings import SERVICES, Settings

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def free_base_port() -> int:
    """A base port N such that N+1..N+4 are all free."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1] - 1
        if base + 4 >= 65535:
            continue
        try:
            for offset in range(1, 5):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
    raise RuntimeError("no four consecutive free ports")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Callable[[str], str]]:
    """`placematch up` in a subprocess on free ports; yields service name -> base URL."""
    base = free_base_port()
    log = tmp_path / "up.log"
    env = {**os.environ, "PLACEMATCH_WEBHOOK_ALLOW_PRIVATE": "true", "PLACEMATCH_EMAIL_ENABLED": "false"}
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "up", "--base-port", str(base), "--data-dir", str(tmp_path / "var")],
        cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)

    def url(service: str) -> str:
        return f"http://127.0.0.1:{base + SERVICES.index(service) + 1}"

    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as client:
            pending = set(SERVICES)
            while pending:
                assert process.poll() is None, f"placematch up exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"not healthy after 60 s: {pending}\n{log.read_text()[-3000:]}"
                for service in sorted(pending):
                    try:
                        if (await client.get(url(service) + "/health")).status_code == 200:
                            pending.discard(service)
                    except httpx.TransportError:
                        pass
                if pending:
                    await asyncio.sleep(0.2)
        yield url
    finally:
        stop(process)


def bearer(role: str, tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(Settings(), role, tenant)}"}


async def get(client: httpx.AsyncClient, url: str, role: str, tenant: str, **params: Any) -> Any:
    response = await client.get(url, headers=bearer(role, tenant), params=params)
    assert response.status_code == 200, f"GET {url}: {response.status_code} {response.text}"
    return response.json()


async def test_demo_fills_a_running_system_through_its_apis(running: Callable[[str], str]) -> None:
    counts = await run_demo(running, seed=3, providers=25, referrals=30, console=Console(width=120))

    assert counts["errors"] == 0
    assert counts["providers_applied"] == 25
    assert counts["referrals_raised"] == 30
    assert counts["providers_rejected"] >= 1 and counts["providers_suspended"] >= 1
    assert counts["referrals_awarded"] >= 1 and counts["awards_with_justification"] >= 1
    assert counts["offers"] >= counts["referrals_awarded"]
    assert counts["referrals_closed_unfilled"] >= 1 and counts["referrals_withdrawn"] >= 1
    assert counts["webhooks_received"] >= 1

    enrolment, referral, matching = running("enrolment"), running("referral"), running("matching")
    async with httpx.AsyncClient(timeout=10) as client:
        # Enrolment: statuses as the demo reports them, with quality scores.
        by_status = {status: await get(client, f"{enrolment}/providers", "commissioner", "region", status=status)
                     for status in ("approved", "rejected", "suspended", "applied")}
        assert by_status["approved"]["total"] == counts["providers_approved"]
        assert by_status["rejected"]["total"] == counts["providers_rejected"]
        assert by_status["suspended"]["total"] == counts["providers_suspended"]
        assert by_status["applied"]["total"] == counts["providers_pending"]
        assert all(p["quality_score"] is not None for p in by_status["approved"]["items"])

        # Referral: every borough sees only its own referrals; together they are all of them.
        seen: dict[str, dict[str, Any]] = {}
        for borough in BOROUGHS:
            items = (await get(client, f"{referral}/referrals", "borough", borough, limit=200))["items"]
            assert all(item["borough"] == borough for item in items)
            seen.update({item["id"]: item for item in items})
        assert len(seen) == 30
        statuses = [item["status"] for item in seen.values()]
        assert statuses.count("awarded") == counts["referrals_awarded"]
        assert statuses.count("withdrawn") == counts["referrals_withdrawn"]
        assert statuses.count("closed") == counts["referrals_closed_unfilled"]
        assert sum(len(item["offers"]) for item in seen.values()) == counts["offers"]
        assert sum(len(item["declines"]) for item in seen.values()) == counts["declines"]

        # At least one award away from the top of the shortlist, with its written justification.
        justified = [item for item in seen.values() if item["status"] == "awarded" and item.get("justification")]
        assert len(justified) == counts["awards_with_justification"]
        award = justified[0]
        shortlist = await get(client, f"{matching}/referrals/{award['id']}/shortlist", "borough", award["borough"])
        awarded_offer = next(o for o in award["offers"] if o["status"] == "awarded")
        assert shortlist["entries"][0]["offer_id"] != awarded_offer["id"]
        assert awarded_offer["id"] in {e["offer_id"] for e in shortlist["entries"]}
        assert all(isinstance(o["weekly_fee_pence"], int) for o in award["offers"])

        # Matching: market insights have rows for the partnership.
        insights = await get(client, f"{matching}/insights", "commissioner", "region")
        assert insights["rows"]
