"""Live capacity and placement outcomes across services, on real Kafka and real PostgreSQL (issue 16).

Enrolment, matching, placement and notification run against one broker, each with its own
PostgreSQL database. An award opens a placement, which takes the provider's only place (enrolment's
view and matching's directory both show it); an unplanned ending returns it and rescores the
provider under quality policy version 2 (placement stability shrunk toward the regional mean), which
matching takes in; the `placement.ended` webhook reaches a real local HTTP server, signed.
"""
from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from services.enrolment.app import create_app as enrolment_app
from services.matching import projections as matching_views
from services.matching.app import create_app as matching_app
from services.notification.app import create_app as notification_app
from services.notification.settings import NotificationSettings
from services.placement.app import create_app as placement_app
from services.placement.domain import awarded_placement_id
from shared.bus import Message
from shared.events import Envelope
from shared.settings import Settings
from shared.testing import auth, service_client
from tests.conftest import _execute
from tests.helpers import wait_for
from tests.support.notification import WebhookReceiver, run_receiver
from tests.unit.enrolment.test_api import application
from tests.unit.placement.test_api import REFERRAL, TODAY

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

SERVICES = ("enrolment", "matching", "placement", "notification")
GOOD = {"framework": "ofsted_legacy", "overall": "good", "inspected_on": "2024-03-01"}


@pytest.fixture
def databases(database_url: str) -> Iterator[dict[str, str]]:
    """A new, empty PostgreSQL database for each service, dropped after the test."""
    names = {service: f"test_{service[:5]}_{uuid.uuid4().hex[:12]}" for service in SERVICES}
    for name in names.values():
        _execute(database_url, f'CREATE DATABASE "{name}"')
    try:
        yield {service: make_url(database_url).set(database=name).render_as_string(hide_password=False)
               for service, name in names.items()}
    finally:
        for name in names.values():
            _execute(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready(60)
        yield client


async def test_award_takes_a_place_unplanned_end_returns_it_and_rescores(
        kafka_bootstrap: str, databases: dict[str, str], kafka_topic_prefix: str, tmp_path: Path) -> None:
    common: dict[str, Any] = {"kafka_bootstrap": kafka_bootstrap, "topic_prefix": kafka_topic_prefix,
                              "relay_poll_seconds": 0.1, "kafka_partitions": 1}

    def settings(service: str) -> Settings:
        return Settings(database_url=databases[service], data_dir=tmp_path / service, **common)

    notification_settings = NotificationSettings(
        database_url=databases["notification"], data_dir=tmp_path / "notification", webhook_allow_private=True,
        delivery_poll_seconds=0.1, email_enabled=False, **common)
    enrolment, matching = enrolment_app(settings("enrolment")), matching_app(settings("matching"))
    placement, notification = placement_app(settings("placement")), notification_app(notification_settings)
    s = settings("enrolment")
    commissioner = auth(s, "commissioner", "partnership")
    t = s.topic

    async with (run_receiver(WebhookReceiver()) as receiver, running(enrolment) as enrol,
                running(matching), running(placement) as places, running(notification) as notify):
        # an approved provider with one place
        provider_id = (await enrol.post("/providers", json=application(capacity=1))).json()["id"]
        assert (await enrol.post(f"/providers/{provider_id}/inspections", headers=commissioner,
                                 json=GOOD)).status_code in (200, 201)
        assert (await enrol.post(f"/providers/{provider_id}/approve", headers=commissioner,
                                 json={})).status_code == 200
        provider = auth(s, "provider", provider_id)
        borough = auth(s, "borough", "croydon")
        created = (await notify.post("/subscriptions", headers=provider,
                                     json={"url": receiver.url, "event_types": ["placement.ended"]})).json()
        receiver.secret = created["secret"]

        async def directory() -> Any:
            async with matching.state.runtime.db.read() as conn:
                return await matching_views.get_provider(conn, provider_id)
        facts = await wait_for(directory, timeout=60)
        assert facts.vacancies == 1 and facts.placements_held is None  # nothing reported yet: capacity

        # the award (as the referral service publishes it) opens a placement: the place is taken
        rid = str(uuid.uuid4())
        pid = awarded_placement_id(rid, "o1")

        def msg(type_: str, data: dict[str, Any]) -> Message:
            return Message(t("referral"), rid, Envelope(type=type_, subject=rid, data=data,
                                                        source="placematch/referral").to_json())
        await placement.state.runtime.bus.publish([
            msg("referral-raised", REFERRAL),
            msg("placement-awarded", {"offer_id": "o1", "provider_id": provider_id, "weekly_fee_pence": 420000,
                                      "justification": None, "top_ranked_offer_id": "o1", "not_selected": [],
                                      "borough": "croydon", "awarded_at": f"{TODAY - timedelta(days=30)}T10:00:00Z"}),
        ])

        async def view(wanted: int) -> Any:
            body = (await enrol.get(f"/providers/{provider_id}", headers=commissioner)).json()
            return body if body["vacancies"] == wanted else None
        taken = await wait_for(lambda: view(0), timeout=60)
        assert taken["placements_held"] == 1 and taken["capacity"] == 1
        assert taken["score"]["policy_version"] == 2 and taken["quality_score"] == "80.00"  # no start yet

        async def held(count: int) -> Any:
            found = await directory()
            return found if found.placements_held == count else None
        assert (await wait_for(lambda: held(1), timeout=60)).vacancies == 0

        # started, then ended unplanned within 12 months: the place returns, stability drops
        r = await places.post(f"/placements/{pid}/start", headers=provider,
                              json={"started_on": str(TODAY - timedelta(days=21))})
        assert r.status_code == 200, r.text
        r = await places.post(f"/placements/{pid}/end", headers=borough, json={
            "ended_on": str(TODAY), "ending": "unplanned", "reason": "breakdown", "note": "Placement broke down"})
        assert r.status_code == 200, r.text

        returned = await wait_for(lambda: view(1), timeout=60)
        # v2: stability 100·(0 + 3·0.80)/(1 + 3) = 60.00; achievement (no review) = the mean 50.00;
        # placement 55.00 = outcomes (no KPIs); quality 0.7·80 + 0.3·55 = 72.50
        assert returned["placements_held"] == 0 and returned["quality_score"] == "72.50"
        assert returned["score"] == {"quality_score": "72.50", "inspection_score": "80.00",
                                     "outcomes_score": "55.00", "policy_version": 2}
        history = (await enrol.get(f"/providers/{provider_id}/history", headers=commissioner)).json()["events"]
        rescored = [e for e in history if e["type"] == "provider-rescored"][-1]["data"]
        assert rescored["inputs"]["placements"] == {"started": 1, "stable": 0, "reviewed": 0,
                                                    "achieved_share_sum": "0.000000"}
        assert [e["type"] for e in history].count("provider-vacancies-changed") == 2

        async def rescored_in_matching() -> Any:
            found = await directory()
            return found if found.placements_held == 0 and str(found.quality_score) == "72.50" else None
        assert (await wait_for(rescored_in_matching, timeout=60)).vacancies == 1

        # the provider's webhook: placement.ended, signed, with the placement and no child identity
        await wait_for(lambda: receiver.accepted, timeout=60)
        [hook] = receiver.accepted
        assert hook.verified
        body = json.loads(hook.body)
        assert body["type"] == "placement.ended"
        assert body["data"]["placement_id"] == pid and body["data"]["ending"] == "unplanned"
        assert body["data"]["reason"] == "breakdown" and body["data"]["provider_id"] == provider_id
        assert "child_ref" not in hook.body and "birth_date" not in hook.body
