"""service.py: the commands and queries as functions of the runtime (keyword-only, one transaction each);
what the routes used to decide inline is decided here."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from services.notification import service
from shared.auth import Principal
from shared.errors import NotFound
from shared.testing import auth
from tests.unit.notification.test_api import PROVIDER, make_settings, running, subscribe

COMMISSIONER = Principal(sub="c", role="commissioner", tenant="region")


def test_commands_and_queries_take_the_runtime_then_keywords_only() -> None:
    functions = [service.create_subscription, service.update_subscription, service.delete_subscription,
                 service.rotate_secret, service.enable_subscription, service.disable_subscription,
                 service.retry_delivery, service.claim_due, service.settle, service.settle_many, service.abandon,
                 service.release, service.list_subscriptions, service.get_subscription, service.list_deliveries,
                 service.get_delivery]
    for function in functions:
        [runtime, *rest] = inspect.signature(function).parameters.values()
        assert runtime.name == "runtime" and all(p.kind is p.KEYWORD_ONLY for p in rest), function.__name__


async def test_an_unknown_delivery_is_not_found_even_for_a_commissioner(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running(settings) as (app, client):
        with pytest.raises(NotFound):
            await service.retry_delivery(app.state.runtime, who=COMMISSIONER, delivery_id="no-such-delivery")
        answer = await client.post("/deliveries/no-such-delivery/retry", headers=auth(settings, "commissioner", "r"))
        assert answer.status_code == 404
        assert await app.state.runtime.store.read_all() == []


async def test_a_subscription_command_on_anothers_subscription_changes_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running(settings) as (app, client):
        created = await subscribe(client, settings, "https://portal.example/hooks")
        before = await app.state.runtime.store.read_all()
        other = Principal(sub="x", role="provider", tenant="prov-2")
        for command in (service.delete_subscription, service.rotate_secret, service.disable_subscription):
            with pytest.raises(NotFound):
                await command(app.state.runtime, who=other, subscription_id=created["id"])
        assert await app.state.runtime.store.read_all() == before
        mine = Principal(sub="p", role=PROVIDER[0], tenant=PROVIDER[1])
        view = await service.disable_subscription(app.state.runtime, who=mine, subscription_id=created["id"])
        assert view["status"] == "disabled" and view["disabled_reason"] == "by_owner"
