"""handlers.py: one consumer of placematch.notifications, 20 requests a transaction, waking the dispatcher
once committed, and a map from event types to service.py's reactions (nothing else)."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.notification import handlers, service
from services.notification.app import create_app
from services.notification.service import NotificationRuntime
from services.notification.settings import NotificationSettings
from services.notification.vault import SecretVault
from shared.consumers import PoisonEvent
from shared.events import Envelope
from shared.testing import service_client
from tests.unit.notification.test_api import make_settings, running


def runtime_for(tmp_path: Path) -> NotificationRuntime:
    settings = NotificationSettings(data_dir=tmp_path)
    return NotificationRuntime(settings, SecretVault(None, tmp_path), consumes=handlers.consumers)


def test_one_consumer_of_notifications_in_batches_of_twenty_that_wakes_the_dispatcher(tmp_path: Path) -> None:
    runtime = runtime_for(tmp_path)
    woken: list[bool] = []
    runtime.on_wake(lambda: woken.append(True))
    [spec] = handlers.consumers(runtime)
    assert list(spec.topics) == ["notifications"] and spec.batch_size == 20 and spec.name == "main"
    assert [c.topics for c in runtime.consumers] == [["placematch.notifications"]]
    assert spec.on_commit is not None
    spec.on_commit()
    assert woken == [True]


def test_every_reaction_is_a_service_function() -> None:
    assert dict(handlers.REACTIONS) == {"notification-requested": service.on_notification_requested}


async def test_other_event_types_are_ignored(tmp_path: Path) -> None:
    event = Envelope(type="delivery-failed", subject="d", data={}, source="placematch/notification")
    await handlers.react(runtime_for(tmp_path), None, event)  # type: ignore[arg-type]  # never touches the database


@pytest.mark.parametrize(("data", "named"), [
    ({"webhook_type": "referral.invited", "recipient": {"role": "provider", "tenant": "p"}}, "notification_id"),
    ({"notification_id": "n", "webhook_type": "nope", "recipient": {"role": "provider", "tenant": "p"}},
     "Unknown webhook type nope"),
    ({"notification_id": "n", "webhook_type": "referral.invited", "recipient": {"role": "provider"}}, "recipient"),
])
async def test_a_malformed_request_is_a_poison_event_and_schedules_nothing(
        tmp_path: Path, data: dict[str, object], named: str) -> None:
    settings = make_settings(tmp_path)
    async with running(settings) as (app, _client):
        runtime = app.state.runtime
        event = Envelope(type="notification-requested", subject="n", data=data, source="placematch/matching")
        with pytest.raises(PoisonEvent, match=named):
            async with runtime.db.transaction() as conn:
                await handlers.react(runtime, conn, event)
        assert await runtime.store.read_all() == []


async def test_a_request_schedules_its_email_in_the_consumers_transaction(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, email_enabled=True)
    app = create_app(settings)
    async with service_client(app):
        runtime = app.state.runtime
        event = Envelope(type="notification-requested", subject="n-1", source="placematch/matching", data={
            "notification_id": "n-1", "webhook_type": "referral.invited",
            "recipient": {"role": "provider", "tenant": "p"}, "email": "a@p.example", "referral_id": "r-1",
            "data": {"referral_id": "r-1"}})
        async with runtime.db.transaction() as conn:
            await handlers.react(runtime, conn, event)
            await handlers.react(runtime, conn, event)  # handled twice: scheduled once
        [scheduled] = [e for e in await runtime.store.read_all() if e.type == "delivery-scheduled"]
        assert (scheduled.data["channel"], scheduled.data["target"]) == ("email", "a@p.example")
        at, body = scheduled.data["scheduled_at"], scheduled.data["body"]
        assert body == f'{{"type":"referral.invited","timestamp":"{at}","data":{{"referral_id":"r-1"}}}}'
