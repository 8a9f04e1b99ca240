"""`placematch demo` against a real `placematch up`: the region it builds is visible through the APIs."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from rich.console import Console

from services.demo import BOROUGHS, run_demo
from tests.e2e.support import Stack, bearer, cli

pytestmark = pytest.mark.e2e


@pytest.fixture
async def running(stack: Stack) -> AsyncIterator[Callable[[str], str]]:
    """`placematch up` in a subprocess on free ports; yields service name -> base URL."""
    await stack.start()
    yield stack.url


async def get(client: httpx.AsyncClient, url: str, role: str, tenant: str, **params: Any) -> Any:
    response = await client.get(url, headers=bearer(role, tenant), params=params)
    assert response.status_code == 200, f"GET {url}: {response.status_code} {response.text}"
    return response.json()


async def test_demo_fills_a_running_system_through_its_apis(running: Callable[[str], str], stack: Stack) -> None:
    counts = await run_demo(running, seed=3, providers=25, referrals=30, console=Console(width=120))

    assert counts["errors"] == 0
    assert counts["providers_applied"] == 25
    assert counts["referrals_raised"] == 30
    assert counts["providers_rejected"] >= 1 and counts["providers_suspended"] >= 1
    assert counts["referrals_awarded"] >= 1 and counts["awards_with_justification"] >= 1
    assert counts["offers"] >= counts["referrals_awarded"]
    assert counts["referrals_closed_unfilled"] >= 1 and counts["referrals_withdrawn"] >= 1
    assert counts["webhooks_received"] >= 1
    # every award opened a placement, started and reviewed; some ended (the share unplanned is random)
    assert counts["placements_opened"] == counts["referrals_awarded"]
    assert counts["placements_started"] == counts["placements_opened"] + counts["placements_off_framework"]
    assert counts["placement_reviews"] == counts["placements_started"] == counts["funding_agreed"]
    assert counts["placements_off_framework"] == 1 and counts["placement_spend_pence"] > 0

    enrolment, referral, matching = running("enrolment"), running("referral"), running("matching")
    placement = running("placement")
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

        # Placement: the commissioners see every placement the demo made; statuses add up.
        placements = (await get(client, f"{placement}/placements", "commissioner", "region"))["placements"]
        assert len(placements) == counts["placements_opened"] + counts["placements_off_framework"]
        assert sum(p["status"] == "ended" for p in placements) == counts["placements_ended"]
        assert sum(bool(p["ending"]) and p["ending"]["ending"] == "unplanned"
                   for p in placements) == counts["placements_ended_unplanned"]
        assert sum(p["off_framework"] for p in placements) == 1

        # Matching: market insights have rows for the partnership.
        insights = await get(client, f"{matching}/insights", "commissioner", "region")
        assert insights["rows"]

    # the demo-sized history replays to the same decisions and views, and its hash chains hold
    stack.stop()
    replayed = cli("replay", "--data-dir", str(stack.data_dir))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "matching: every decision reproduced byte for byte" in replayed.stdout
    assert "referral: every read model rebuilt identical" in replayed.stdout
    assert "placement: every placement stream and view reproduced byte for byte" in replayed.stdout
    verified = cli("verify", "--data-dir", str(stack.data_dir))
    assert verified.returncode == 0 and "BROKEN" not in verified.stdout, verified.stdout
