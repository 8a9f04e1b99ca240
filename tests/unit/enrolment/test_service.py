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


async def test_commands_run_through_the_service_with_typed_inputs(tmp_path: Path) -> None:
    """The service's functions are the API's only way in: typed values in, the provider's view out,
    one transaction each (the read model follows every command)."""
    from services.enrolment import service
    from services.enrolment.requests import ApplicationIn, InspectionIn
    from shared.auth import Principal
    from shared.errors import InvalidTransition, NotFound
    from tests.unit.enrolment.test_api import GOOD

    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    app = create_app(settings)
    commissioner = Principal(sub="c", role="commissioner", tenant="partnership")
    async with service_client(app):
        runtime = app.state.runtime
        profile = ApplicationIn.model_validate(application()).to_profile()
        applied = await service.apply(runtime, who=None, profile=profile)
        pid = applied["id"]
        inspected = await service.record_inspection(runtime, who=commissioner, provider_id=pid,
                                                    inspection=InspectionIn.model_validate(GOOD).to_inspection())
        assert inspected["quality_score"] == "80.00"
        approved = await service.approve(runtime, who=commissioner, provider_id=pid, reason=None)
        assert approved["status"] == "approved"
        listed = await service.list_providers(runtime, status=None, lot=None, limit=10, offset=0)
        assert [p["status"] for p in listed["items"]] == ["approved"]
        with pytest.raises(InvalidTransition) as duplicate:
            await service.apply(runtime, who=None, profile=profile)
        assert (duplicate.value.field, duplicate.value.rule) == ("urn", "duplicate_urn")
        assert pid in duplicate.value.detail
        with pytest.raises(NotFound):
            await service.approve(runtime, who=commissioner, provider_id="ghost", reason=None)
        history = await service.history(runtime, provider_id=pid, who=commissioner)
        assert [e["type"] for e in history["events"]] == [
            "provider-applied", "provider-inspected", "provider-rescored", "provider-approved"]
        assert history["events"][0]["actor"] == f"provider:{pid}"


def test_enrolment_consumes_placements_only(tmp_path: Path) -> None:
    from services.enrolment import handlers

    app = create_app(Settings(data_dir=tmp_path))
    assert set(handlers.REACTIONS) == {"placement-opened", "placement-started", "placement-ended",
                                       "award-collapsed", "placement-reviewed"}
    assert [spec.topics for spec in handlers.consumers(app.state.runtime)] == [["placement"]]
