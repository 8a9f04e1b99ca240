"""One active provider per Ofsted URN even when applications race past the read-before-write check.

`apply` first looks the URN up in the providers read model (a clear 409 naming the provider);
applications that all pass that look-up at the same time are settled by the read model's partial
unique index, whose refusal rolls back the loser's whole transaction (its event included).
"""
from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.enrolment import projections
from services.enrolment.app import create_app
from shared.settings import Settings
from shared.testing import auth, service_client
from tests.unit.enrolment.test_api import application

PROBLEM = "application/problem+json"


@contextlib.contextmanager
def all_precheck_first(monkeypatch: pytest.MonkeyPatch, racers: int):
    """Hold each of the first `racers` URN look-ups until all have been made, so every racing
    application passes the cheap check before any of them writes (the race, every time)."""
    original = projections.active_provider_with_urn
    arrived = 0
    everyone = asyncio.Event()

    async def looked_up_together(conn: Any, urn: str) -> str | None:
        nonlocal arrived
        found = await original(conn, urn)
        if arrived < racers:
            arrived += 1
            if arrived == racers:
                everyone.set()
            with contextlib.suppress(TimeoutError):  # never hang the test on a miscount
                await asyncio.wait_for(everyone.wait(), 10)
        return found

    monkeypatch.setattr(projections, "active_provider_with_urn", looked_up_together)
    yield


async def race_applications(client: httpx.AsyncClient, app: FastAPI,
                            monkeypatch: pytest.MonkeyPatch, racers: int = 8) -> str:
    """`racers` simultaneous applications with one URN: exactly one is enrolled, the others get
    409 duplicate_urn problem+json, and the store holds one `provider-applied` event."""
    bodies = [application(name=f"Riverside {n}", urn=" 100001 " if n % 2 else "100001")
              for n in range(racers)]
    with all_precheck_first(monkeypatch, racers):
        responses = await asyncio.gather(*(client.post("/providers", json=b) for b in bodies))

    created = [r for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    assert len(created) == 1, [(r.status_code, r.text) for r in responses]
    winner = created[0].json()["id"]
    for response in refused:
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert (problem["field"], problem["rule"]) == ("urn", "duplicate_urn"), problem
        assert winner in problem["detail"], "the refusal names the provider enrolled"

    applied = [e for e in await app.state.runtime.store.read_all()
               if e.type == "provider-applied"]
    assert [e.subject for e in applied] == [winner]
    return winner


async def test_simultaneous_applications_with_one_urn_enrol_one_provider(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    commissioner = auth(settings, "commissioner", "partnership")
    app = create_app(settings)
    async with service_client(app) as client:
        winner = await race_applications(client, app, monkeypatch)
        listed = (await client.get("/providers", headers=commissioner)).json()
        assert [p["id"] for p in listed["items"]] == [winner]


async def test_a_rejected_providers_urn_may_apply_again(tmp_path: Path) -> None:
    """The index leaves rejected providers out: their URN may enrol anew, once."""
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    commissioner = auth(settings, "commissioner", "partnership")
    async with service_client(create_app(settings)) as client:
        first = (await client.post("/providers", json=application())).json()
        rejected = await client.post(f"/providers/{first['id']}/reject",
                                     json={"reason": "incomplete"}, headers=commissioner)
        assert rejected.status_code == 200, rejected.text
        again = await client.post("/providers", json=application(name="Riverside Again"))
        assert again.status_code == 201, again.text
        third = await client.post("/providers", json=application(name="Riverside Third"))
        assert third.status_code == 409 and third.json()["rule"] == "duplicate_urn"
        assert again.json()["id"] in third.json()["detail"]
