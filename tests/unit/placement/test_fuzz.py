"""Never a 500: every write of the placement service with one or two fields of a valid body replaced
by any JSON value (or removed) answers below 500, a 4xx as problem+json naming a field."""
from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.placement.app import create_app
from services.placement.domain import awarded_placement_id
from shared.settings import Settings
from shared.testing import auth, service_client
from tests.helpers import wait_for
from tests.unit.placement.test_api import NEEDS, OUTCOMES, REFERRAL, TODAY, award, env, feed, shortlist

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30) | st.sampled_from(["2026-02-30", "9999-12-31", "0001-01-01", "", "QKK", "health"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6)


def bodies(pid: str, change_id: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    day = str(TODAY - timedelta(days=3))
    return {
        "off-framework": ("borough", "/placements", {
            "provider_name": "Named School", "weekly_fee_pence": 100000, "planned_start": day,
            "needs_profile": NEEDS, "reason": "tribunal_named", "outcomes": ["x"]}),
        "start": ("provider", f"/placements/{pid}/start", {"started_on": day}),
        "end": ("borough", f"/placements/{pid}/end", {"ended_on": day, "ending": "unplanned", "reason": "breakdown"}),
        "collapse": ("borough", f"/placements/{pid}/collapse", {
            "reason": "provider_withdrew", "next": "award_next_offer", "next_offer_id": "o2"}),
        "funding": ("borough", f"/placements/{pid}/funding", {
            "contributions": [{"stream": "education", "weekly_pence": 300000},
                              {"stream": "health", "weekly_pence": 120000, "icb_code": "QKK"}],
            "agreed_from": day, "agreed_until": str(TODAY + timedelta(days=300)),
            "review_due": str(TODAY + timedelta(days=200))}),
        "review": ("borough", f"/placements/{pid}/reviews", {
            "reviewed_on": day, "continues": True, "needs_profile": NEEDS,
            "outcomes": [{"outcome": o, "progress": "achieved"} for o in OUTCOMES]}),
        "fee-change": ("provider", f"/placements/{pid}/fee-changes", {
            "weekly_fee_pence": 430000, "effective_from": day, "reason": "uplift"}),
        "decision": ("borough", f"/placements/{pid}/fee-changes/{change_id}/decision", {
            "decision": "agreed_in_part", "weekly_fee_pence": 425000, "note": "partly"}),
    }


@pytest.mark.parametrize("operation", ["off-framework", "start", "end", "collapse", "funding", "review",
                                       "fee-change", "decision"])
def test_writes_never_answer_5xx(tmp_path: Any, operation: str) -> None:
    asyncio.run(_fuzz(tmp_path, operation))


async def _fuzz(tmp_path: Any, operation: str) -> None:
    config = Settings(data_dir=tmp_path, relay_poll_seconds=0.05, placement_review_check_seconds=3600,
                      rate_limits_enabled=False)
    app = create_app(config)
    rid, provider = str(uuid.uuid4()), str(uuid.uuid4())
    pid = awarded_placement_id(rid, "o1")
    tokens = {"borough": auth(config, "borough", "croydon"), "provider": auth(config, "provider", provider)}
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        await feed(app, config, env("referral-raised", rid, REFERRAL, "referral"),
                   shortlist(rid, [("o1", provider, 420000), ("o2", str(uuid.uuid4()), 430000)]),
                   award(rid, "o1", provider))
        await wait_for(lambda: _status(client, pid, tokens["borough"]))
        change_id = "none"
        if operation in ("end", "funding", "review", "fee-change", "decision"):
            await client.post(f"/placements/{pid}/start", json={"started_on": str(TODAY - timedelta(days=10))},
                              headers=tokens["provider"])
        if operation == "decision":
            r = await client.post(f"/placements/{pid}/fee-changes", headers=tokens["provider"], json={
                "weekly_fee_pence": 430000, "effective_from": str(TODAY), "reason": "uplift"})
            change_id = r.json()["fee_changes"][0]["change_id"]
        role, path, valid = bodies(pid, change_id)[operation]
        loop = asyncio.get_running_loop()
        requests: list[dict[str, Any]] = []

        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(changes=st.dictionaries(st.sampled_from(sorted(_leaves(valid))), json_values | st.just(...),
                                       min_size=1, max_size=2))
        def collect(changes: dict[str, Any]) -> None:
            requests.append(_changed(valid, changes))

        await loop.run_in_executor(None, collect)
        for body in requests:
            response = await client.post(path, json=body, headers=tokens[role])
            assert response.status_code < 500, (body, response.text)
            if response.status_code >= 400:
                assert response.headers["content-type"].startswith("application/problem+json"), response.text
                assert response.json().get("detail"), response.text


async def _status(client: Any, pid: str, headers: dict[str, str]) -> bool:
    return (await client.get(f"/placements/{pid}", headers=headers)).status_code == 200


def _leaves(body: Any, prefix: str = "") -> set[str]:
    """Dotted paths of every value in the body (list items by index)."""
    paths = {prefix} if prefix else set()
    if isinstance(body, dict):
        for key, value in body.items():
            paths |= _leaves(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(body, list):
        for i, value in enumerate(body):
            paths |= _leaves(value, f"{prefix}.{i}")
    return paths


def _changed(body: Any, changes: dict[str, Any]) -> Any:
    import copy

    out = copy.deepcopy(body)
    for path, value in changes.items():
        parts = path.split(".")
        target = out
        try:
            for part in parts[:-1]:
                target = target[int(part)] if isinstance(target, list) else target[part]
            last: Any = int(parts[-1]) if isinstance(target, list) else parts[-1]
            if value is ...:
                del target[last]
            else:
                target[last] = value
        except (KeyError, IndexError, TypeError, ValueError):
            continue  # an earlier change removed or replaced the parent
    return out
