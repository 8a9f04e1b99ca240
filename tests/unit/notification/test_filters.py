"""The delivery log's query: typed once by the request (field and rule named as always), applied by the
read model; who sees whose deliveries; `before` pages back."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.notification.domain import Owner
from services.notification.filters import DELIVERY_TYPES, viewer_of
from shared.testing import auth
from shared.vocabulary import WEBHOOK_TYPES
from tests.helpers import wait_for
from tests.support.notification import WebhookReceiver, run_receiver
from tests.unit.notification.test_api import (
    PROVIDER,
    deliveries,
    make_settings,
    request_notification,
    running,
    subscribe,
)


def test_overseers_see_everyones_deliveries_others_their_own() -> None:
    assert viewer_of(Owner("commissioner", "region")) is None
    assert viewer_of(Owner("auditor", "ops")) is None
    assert viewer_of(Owner("provider", "p-1")) == Owner("provider", "p-1")
    assert viewer_of(Owner("borough", "croydon")) == Owner("borough", "croydon")


def test_a_delivery_is_of_a_webhook_type_or_the_endpoint_disabled_email() -> None:
    assert set(WEBHOOK_TYPES) | {"subscription.disabled"} == DELIVERY_TYPES


@pytest.mark.parametrize(("params", "field", "rule"), [
    ({"status": "lost"}, "status", "one_of"),
    ({"event_type": "x"}, "event_type", "known_webhook_type"),
    ({"channel": "sms"}, "channel", "one_of"),
    ({"limit": "0"}, "limit", "range"),
    ({"limit": "501"}, "limit", "range"),
    ({"before": "2026-06-01T09:00:00"}, "before", "timezone"),
    ({"before": "soon"}, "before", "format"),
])
async def test_bad_filters_are_422_naming_field_and_rule(
        tmp_path: Path, params: dict[str, str], field: str, rule: str) -> None:
    settings = make_settings(tmp_path)
    async with running(settings) as (_app, client):
        response = await client.get("/deliveries", headers=auth(settings, *PROVIDER), params=params)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert (response.json()["field"], response.json()["rule"]) == (field, rule)


async def test_filters_and_paging_back_with_before(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with run_receiver(WebhookReceiver()) as receiver, running(settings) as (app, client):
        await subscribe(client, settings, receiver.url)
        for _ in range(3):
            await request_notification(app)

        async def all_three() -> list[dict[str, Any]]:
            log = await deliveries(client, settings)
            assert len(log) == 3
            return log

        newest, middle, oldest = await wait_for(all_three)  # newest first
        assert [d["id"] for d in await deliveries(client, settings, before=newest["created_at"])] == [
            middle["id"], oldest["id"]]
        assert [d["id"] for d in await deliveries(client, settings, before=middle["created_at"], limit="1")] == [
            oldest["id"]]
        assert await deliveries(client, settings, before="2000-01-01T00:00:00+01:00") == []
        assert len(await deliveries(client, settings, event_type="referral.invited", channel="webhook")) == 3
        assert await deliveries(client, settings, event_type="subscription.disabled") == []
        assert await deliveries(client, settings, channel="email") == []
        overseen = await client.get("/deliveries", headers=auth(settings, "auditor", "ops"))
        assert len(overseen.json()["deliveries"]) == 3
        assert await deliveries(client, settings, ("borough", "prov-1")) == []
