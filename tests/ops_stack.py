"""The embedded run in the test's own process (the four services on SQLite and one local bus, as
`placematch up` runs them), with the few requests of a referral's life the operations tests need."""
from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

import services
from services import SERVICES
from services.notification.settings import NotificationSettings
from shared.settings import Settings
from shared.testing import auth


def embedded_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": data_dir, "relay_poll_seconds": 0.05, "webhook_allow_private": True,
                              "email_enabled": False, "delivery_poll_seconds": 0.1, "webhook_timeout_seconds": 3.0,
                              "rate_limits_enabled": False, **overrides}
    return NotificationSettings(**values)  # the core settings plus notification's (the others ignore them)


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.apps: dict[str, Any] = {}
        self.clients: dict[str, httpx.AsyncClient] = {}
        self.ports: dict[str, int] = {}

    def headers(self, role: str, tenant: str) -> dict[str, str]:
        return auth(self.settings, role, tenant)


@contextlib.asynccontextmanager
async def embedded_stack(settings: Settings, *, listen: bool = False) -> AsyncIterator[Stack]:
    """Start the four apps; with `listen`, each also on a real port of 127.0.0.1 (for a scraper)."""
    stack = Stack(settings)
    async with contextlib.AsyncExitStack() as stop:
        servers: list[tuple[uvicorn.Server, asyncio.Task[None], socket.socket]] = []
        for name in SERVICES:
            app = services.create_app(name)(settings)
            stack.apps[name] = app
            if listen:
                sock = socket.socket()
                sock.bind(("127.0.0.1", 0))
                stack.ports[name] = sock.getsockname()[1]
                server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", log_config=None))
                servers.append((server, asyncio.create_task(server.serve(sockets=[sock])), sock))
                client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports[name]}", timeout=30)
            else:
                await stop.enter_async_context(app.router.lifespan_context(app))
                client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
            stack.clients[name] = await stop.enter_async_context(client)

        async def shutdown() -> None:
            for server, _task, _sock in servers:
                server.should_exit = True
            for _server, task, sock in servers:
                await task
                sock.close()

        stop.push_async_callback(shutdown)
        async with asyncio.timeout(60):
            while not all(server.started for server, _t, _s in servers):
                if any(task.done() for _s, task, _k in servers):
                    raise RuntimeError("a service did not start")
                await asyncio.sleep(0.02)
        for app in stack.apps.values():
            await app.state.runtime.consumers_ready(timeout=60)
        yield stack


PROVIDER_BODY = {
    "name": "Riverside School", "urn": "100001", "kind": "independent_special_school", "lots": ["ASD", "SEMH"],
    "age_min": 5, "age_max": 19, "genders": ["female", "male"], "placement_types": ["day", "residential_38"],
    "capacity": 4, "location": {"postcode": "CR0 2AB", "lat": 51.375, "lon": -0.1}, "boroughs_served": [],
    "contact_email": "admissions@riverside.example",
}


def referral_body() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "child_ref": "CR-2026-0042", "birth_date": "2014-05-02", "gender": "male", "primary_need": "ASD",
        "secondary_needs": ["SLCN"], "placement_type": "day",
        "required_from": (now + timedelta(days=90)).date().isoformat(),
        "location": {"postcode": "CR0 1NX", "lat": 51.372, "lon": -0.099}, "max_travel_km": 30,
        "offer_deadline": (now + timedelta(days=30)).strftime("%Y-%m-%dT17:00:00Z"), "preferred_provider_id": None,
        "needs_profile": {k: 1 for k in (
            "physical_health", "emotional_health", "relationships", "risk_taking", "learning_disability",
            "educational_progress", "self_regulation", "community_engagement", "self_care",
            "goals_and_aspirations", "voice", "identity")},
        "outcomes": ["Attend school full time by spring term"],
    }


async def approved_provider(stack: Stack, urn: str = "100001") -> str:
    enrolment = stack.clients["enrolment"]
    commissioner = stack.headers("commissioner", "region")
    created = await enrolment.post("/providers", json={**PROVIDER_BODY, "urn": urn})
    assert created.status_code == 201, created.text
    provider_id = created.json()["id"]
    inspection = {"framework": "ofsted_legacy", "overall": "good", "inspected_on": "2024-03-01"}
    inspected = await enrolment.post(f"/providers/{provider_id}/inspections", headers=commissioner, json=inspection)
    assert inspected.status_code in (200, 201), inspected.text
    approved = await enrolment.post(f"/providers/{provider_id}/approve", headers=commissioner, json={})
    assert approved.status_code == 200, approved.text
    return str(provider_id)


async def subscribe(stack: Stack, provider_id: str, url: str) -> str:
    response = await stack.clients["notification"].post(
        "/subscriptions", headers=stack.headers("provider", provider_id),
        json={"url": url, "event_types": ["referral.invited"]})
    assert response.status_code == 201, response.text
    return str(response.json()["secret"])


async def raise_referral(stack: Stack, headers: dict[str, str] | None = None) -> str:
    borough = {**stack.headers("borough", "croydon"), **(headers or {})}
    response = await stack.clients["referral"].post("/referrals", json=referral_body(), headers=borough)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def settled(stack: Stack, timeout: float = 30) -> None:
    """Until every outbox is empty and every consumer has committed all there is (the local bus)."""
    from shared.metrics import consumer_lag, outbox_state

    async def quiet() -> bool:
        for app in stack.apps.values():
            runtime = app.state.runtime
            if (await outbox_state(runtime.db))[0]:
                return False
            for consumer in runtime.consumers:
                if any(lag for _t, _p, lag in await consumer_lag(consumer)):
                    return False
        return True

    from tests.helpers import wait_for

    await wait_for(quiet, timeout=timeout, interval=0.05, message="outboxes empty and consumers caught up")


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a /metrics page (None when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None
