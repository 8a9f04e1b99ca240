"""Webhook signing secrets never enter an event (issue 12): they are sealed in a table of their own,
retired after the rotation overlap, and what is on disk never holds one in clear.

SQLite + LocalBus with a real HTTP receiver that verifies with the `standardwebhooks` package.
"""
from __future__ import annotations

import base64
import contextlib
import stat
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from standardwebhooks import Webhook
from typer.testing import CliRunner

from services.cli import app as cli
from services.notification.app import create_app
from services.notification.projections import subscription_secrets
from services.notification.settings import NotificationSettings
from services.notification.subscriptions import legacy_secret_id, new_signing_secret
from services.notification.vault import KEY_FILE, SecretsKeyError, warn_of_secrets_in_clear
from shared.aggregate import NewEvent
from shared.bus import Message
from shared.db import Database, sqlite_url
from shared.events import Envelope, now_utc, registry
from shared.idempotency import idempotency_keys
from shared.integrity import verify_store
from shared.schema import events
from shared.testing import auth, service_client
from tests.helpers import wait_for
from tests.support.notification import WebhookReceiver, run_receiver

PROVIDER = ("provider", "prov-1")


def make_settings(tmp_path: Path, **overrides: Any) -> NotificationSettings:
    values: dict[str, Any] = {
        "data_dir": tmp_path, "relay_poll_seconds": 0.05, "webhook_allow_private": True,
        "webhook_retry_base_seconds": 0.05, "webhook_retry_factor": 1.0, "webhook_retry_jitter": 0.0,
        "webhook_timeout_seconds": 2.0, "delivery_poll_seconds": 0.05, "email_enabled": False, **overrides,
    }
    return NotificationSettings(**values)


@contextlib.asynccontextmanager
async def running(settings: NotificationSettings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(settings)
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        yield app, client


async def request_notification(app: Any) -> str:
    notification_id = str(uuid.uuid4())
    envelope = Envelope(
        type="notification-requested", subject=notification_id, source="placematch/matching",
        data={"notification_id": notification_id, "webhook_type": "referral.invited",
              "recipient": {"role": PROVIDER[0], "tenant": PROVIDER[1]}, "email": None, "referral_id": "r-1",
              "data": {"referral_id": "r-1", "primary_need": "ASD"}})
    runtime = app.state.runtime
    await runtime.bus.publish([Message(runtime.topic("notifications"), notification_id, envelope.to_json())])
    return notification_id


def clear_forms(secret: str) -> list[bytes]:
    """A secret as it could be found in clear: whole, its base64 part, and the key bytes in base64url."""
    raw = base64.b64decode(secret.removeprefix("whsec_"))
    return [secret.encode(), secret.removeprefix("whsec_").encode(), base64.urlsafe_b64encode(raw).rstrip(b"=")]


def files_holding(data_dir: Path, secrets: list[str]) -> list[str]:
    found = []
    for path in data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            found += [f"{path.name}: {s[:12]}…" for s in secrets if any(f in content for f in clear_forms(s))]
    return found


async def event_rows_holding(db: Database, secrets: list[str]) -> list[str]:
    async with db.read() as conn:
        rows = (await conn.execute(select(events.c.position, events.c.type, events.c.body))).all()
    assert rows, "no events recorded"
    return [f"{r.type}@{r.position}" for r in rows for s in secrets
            if any(f.decode() in r.body for f in clear_forms(s))]


async def stored_secret_ids(app: Any) -> set[str]:
    async with app.state.runtime.db.read() as conn:
        return set((await conn.execute(select(subscription_secrets.c.secret_id))).scalars())


# --- the finding: secrets in clear in the immutable event log ---------------------------------------


async def test_no_secret_in_clear_in_events_or_any_file_of_the_data_dir(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    headers = auth(settings, *PROVIDER)
    async with run_receiver(WebhookReceiver()) as receiver, running(settings) as (app, client):
        created = await client.post("/subscriptions", headers={**headers, "Idempotency-Key": "sub-1"},
                                    json={"url": receiver.url, "event_types": ["referral.invited"]})
        assert created.status_code == 201, created.text
        sid, first = created.json()["id"], created.json()["secret"]
        rotated = await client.post(f"/subscriptions/{sid}/rotate-secret",
                                    headers={**headers, "Idempotency-Key": "rot-1"})
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()["secret"]
        assert first.startswith("whsec_") and second.startswith("whsec_") and first != second

        # signing keeps working: the receiver verifies with the new secret, and the old one
        # still verifies during the overlap
        receiver.secret = second
        await request_notification(app)
        [received] = await wait_for(lambda: receiver.accepted)
        Webhook(first).verify(received.body, received.headers)

        assert await event_rows_holding(app.state.runtime.db, [first, second]) == []

        # a retry of a keyed request does not bring the secret back from the stored answer
        again = await client.post("/subscriptions", headers={**headers, "Idempotency-Key": "sub-1"},
                                  json={"url": receiver.url, "event_types": ["referral.invited"]})
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.json()["id"] == sid and again.json()["secret"] is None and "rotate" in again.json()["secret_note"]

        async with app.state.runtime.db.read() as conn:
            kept = (await conn.execute(select(idempotency_keys.c.body))).scalars().all()
        assert len(kept) == 2 and not any(f in b for b in kept for s in (first, second) for f in clear_forms(s))
    assert files_holding(tmp_path, [first, second]) == []
    assert {p.name for p in tmp_path.iterdir()} >= {"notification.db", KEY_FILE}


async def test_the_events_name_secrets_by_id(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running(settings) as (app, client):
        created = (await client.post("/subscriptions", headers=auth(settings, *PROVIDER),
                                     json={"url": "http://127.0.0.1:9/h", "event_types": ["referral.invited"]})).json()
        await client.post(f"/subscriptions/{created['id']}/rotate-secret", headers=auth(settings, *PROVIDER))
        history = await app.state.runtime.store.read_stream(created["id"])
        first, rotation = history[0].data, history[1].data
        assert (history[0].dataversion, history[1].dataversion) == (2, 2)
        assert "secret" not in first and rotation["previous_secret_id"] == first["secret_id"]
        assert await stored_secret_ids(app) == {first["secret_id"], rotation["secret_id"]}


# --- retiring --------------------------------------------------------------------------------------


async def test_a_secret_is_deleted_when_its_overlap_ends_and_all_when_the_subscription_is(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, webhook_secret_grace_seconds=1.0)
    headers = auth(settings, *PROVIDER)
    async with run_receiver(WebhookReceiver()) as receiver, running(settings) as (app, client):
        created = (await client.post("/subscriptions", headers=headers,
                                     json={"url": receiver.url, "event_types": ["referral.invited"]})).json()
        sid = created["id"]
        for _ in range(2):  # a second rotation inside the overlap drops the first secret at once
            rotated = (await client.post(f"/subscriptions/{sid}/rotate-secret", headers=headers)).json()
        history = await app.state.runtime.store.read_stream(sid)
        current, previous = history[-1].data["secret_id"], history[-1].data["previous_secret_id"]
        assert await stored_secret_ids(app) == {current, previous}
        # the background task deletes the previous one once the 1 s overlap is over
        await wait_for(lambda: _only(app, {current}), timeout=10)
        receiver.secret = rotated["secret"]
        await request_notification(app)
        [received] = await wait_for(lambda: receiver.accepted)
        assert len(received.headers["webhook-signature"].split()) == 1  # the current secret alone
        assert (await client.delete(f"/subscriptions/{sid}", headers=headers)).status_code == 204
        assert await stored_secret_ids(app) == set()


async def _only(app: Any, ids: set[str]) -> bool:
    return await stored_secret_ids(app) == ids


# --- the key ---------------------------------------------------------------------------------------


async def test_the_generated_key_is_private_and_a_lost_one_stops_the_start_clearly(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running(settings) as (_app, client):
        assert (await client.post("/subscriptions", headers=auth(settings, *PROVIDER),
                                  json={"url": "http://127.0.0.1:9/h", "event_types": ["referral.invited"]})
                ).status_code == 201
    key_file = tmp_path / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    async with running(settings):  # the same key again: starts
        pass

    key_file.unlink()
    with pytest.raises(SecretsKeyError, match="secrets.key is missing but 1 webhook signing secret"):
        async with running(settings):
            pass
    assert not key_file.exists()  # no new key is made up over secrets sealed with the lost one

    wrong = make_settings(tmp_path, secrets_key=Fernet.generate_key().decode())
    with pytest.raises(SecretsKeyError, match="does not open the 1 webhook signing secret"):
        async with running(wrong):
            pass
    # the key they were sealed with, given after a new one (rotating the key), opens them
    async with running(make_settings(tmp_path, secrets_key=f"{Fernet.generate_key().decode()},{key}")):
        pass


def test_serve_refuses_notification_without_a_secrets_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLACEMATCH_SECRETS_KEY", raising=False)
    result = CliRunner().invoke(cli, ["serve", "notification"])
    assert result.exit_code == 2 and "PLACEMATCH_SECRETS_KEY is unset" in result.output
    monkeypatch.setenv("PLACEMATCH_SECRETS_KEY", "not-a-key")
    result = CliRunner().invoke(cli, ["serve", "notification"])
    assert result.exit_code == 2 and "32 random bytes in base64" in result.output


# --- events stored before the change ------------------------------------------------------------------


async def test_version_1_events_with_clear_secrets_still_load_sign_and_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscription recorded by the old code (secret in clear, data version 1) keeps signing;
    rotating it moves it onto a sealed secret, and the store's hash chain is untouched."""
    settings = make_settings(tmp_path)
    old = new_signing_secret()
    sid = str(uuid.uuid4())
    async with run_receiver(WebhookReceiver(secret=old)) as receiver:
        async with running(settings) as (app, _client):
            store = app.state.runtime.store
            monkeypatch.setitem(registry._versions, "subscription-created", 1)
            async with app.state.runtime.db.transaction() as conn:
                from services.notification import projections

                recorded = await store.append(conn, sid, 0, [NewEvent("subscription-created", {
                    "subscription_id": sid, "owner": {"role": PROVIDER[0], "tenant": PROVIDER[1]},
                    "url": receiver.url, "event_types": ["referral.invited"], "contact_email": None,
                    "secret": old, "created_at": "2026-06-01T09:00:00Z"})])
                await projections.project(conn, recorded)
            monkeypatch.undo()
        async with running(settings) as (app, client):
            assert await warn_of_secrets_in_clear(app.state.runtime.store) == 1
            [stored] = await app.state.runtime.store.read_stream(sid)
            assert stored.dataversion == 2 and stored.data["secret_id"] == legacy_secret_id(old)
            await request_notification(app)
            await wait_for(lambda: receiver.accepted)
            assert receiver.accepted[0].verified

            rotated = await client.post(f"/subscriptions/{sid}/rotate-secret", headers=auth(settings, *PROVIDER))
            assert rotated.status_code == 200, rotated.text
            receiver.secret = rotated.json()["secret"]
            await request_notification(app)
            await wait_for(lambda: len(receiver.accepted) == 2)
            Webhook(old).verify(receiver.accepted[1].body, receiver.accepted[1].headers)  # overlap
            assert await event_rows_holding(app.state.runtime.db, [rotated.json()["secret"]]) == []
            assert await warn_of_secrets_in_clear(app.state.runtime.store) == 0
    db = Database(sqlite_url(tmp_path / "notification.db"))
    try:
        report = await verify_store(db)
    finally:
        await db.dispose()
    assert report.ok and report.events >= 3


def test_the_upcaster_needs_no_database() -> None:
    data = {"subscription_id": "s", "secret": "whsec_" + base64.b64encode(b"k" * 32).decode(),
            "previous_secret": None, "previous_valid_until": (now_utc() + timedelta(hours=1)).isoformat(),
            "rotated_at": now_utc().isoformat()}
    envelope = Envelope(type="subscription-secret-rotated", subject="s", data=data,
                        source="placematch/notification", dataversion=1)
    upcast = Envelope.from_json(envelope.to_json())
    assert upcast.data["previous_secret_id"] is None and upcast.data["secret_id"] == legacy_secret_id(data["secret"])
