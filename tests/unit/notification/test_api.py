"""Notification service over HTTP on SQLite + LocalBus, with a real webhook receiver and SMTP server."""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from services.notification.app import create_app
from services.notification.settings import NotificationSettings
from shared.bus import Message
from shared.events import Envelope
from shared.testing import auth, service_client
from tests.helpers import wait_for
from tests.support.notification import WebhookReceiver, run_mail_catcher, run_receiver

PROVIDER = ("provider", "prov-1")


def make_settings(tmp_path: Path, **overrides: Any) -> NotificationSettings:
    values: dict[str, Any] = {
        "data_dir": tmp_path, "relay_poll_seconds": 0.05, "webhook_allow_private": True,
        "webhook_retry_base_seconds": 0.05, "webhook_retry_factor": 1.0, "webhook_retry_jitter": 0.0,
        "webhook_timeout_seconds": 2.0, "delivery_poll_seconds": 0.05, "email_enabled": False,
        **overrides,
    }
    return NotificationSettings(**values)


@contextlib.asynccontextmanager
async def running(settings: NotificationSettings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(settings)
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        yield app, client


async def request_notification(app: Any, *, tenant: str = "prov-1", webhook_type: str = "referral.invited",
                               email: str | None = None, role: str = "provider") -> str:
    notification_id = str(uuid.uuid4())
    envelope = Envelope(
        type="notification-requested", subject=notification_id, source="placematch/matching",
        data={"notification_id": notification_id, "webhook_type": webhook_type,
              "recipient": {"role": role, "tenant": tenant}, "email": email, "referral_id": "r-1",
              "data": {"referral_id": "r-1", "primary_need": "ASD", "age_at_start": 12,
                       "location": {"district": "Croydon"}}},
    )
    runtime = app.state.runtime
    await runtime.bus.publish([Message(runtime.topic("notifications"), notification_id, envelope.to_json())])
    return notification_id


async def subscribe(client: httpx.AsyncClient, settings: NotificationSettings, url: str,
                    who: tuple[str, str] = PROVIDER, **extra: Any) -> dict[str, Any]:
    response = await client.post("/subscriptions", headers=auth(settings, *who),
                                 json={"url": url, "event_types": ["referral.invited"], **extra})
    assert response.status_code == 201, response.text
    return response.json()


async def deliveries(client: httpx.AsyncClient, settings: NotificationSettings, who: tuple[str, str] = PROVIDER,
                     **params: str) -> list[dict[str, Any]]:
    response = await client.get("/deliveries", headers=auth(settings, *who), params=params)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


async def topic_events(app: Any, short: str) -> list[Envelope]:
    runtime = app.state.runtime
    return [Envelope.from_json(m.value) for m in await runtime.bus.read_topic(runtime.topic(short))]


# --- subscriptions ---------------------------------------------------------------------------


async def test_secret_shown_once_and_tenants_isolated(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running(settings) as (_app, client):
        created = await subscribe(client, settings, "https://portal.example/hooks")
        assert created["secret"].startswith("whsec_")
        assert created["status"] == "active"
        mine = (await client.get("/subscriptions", headers=auth(settings, *PROVIDER))).json()["subscriptions"]
        assert [s["id"] for s in mine] == [created["id"]]
        assert "secret" not in mine[0]
        one = await client.get(f"/subscriptions/{created['id']}", headers=auth(settings, *PROVIDER))
        assert one.status_code == 200 and "secret" not in one.json()

        other = auth(settings, "provider", "prov-2")
        assert (await client.get("/subscriptions", headers=other)).json()["subscriptions"] == []
        assert (await client.get(f"/subscriptions/{created['id']}", headers=other)).status_code == 404
        refused = await client.delete(f"/subscriptions/{created['id']}", headers=other)
        assert refused.status_code == 404
        assert refused.headers["content-type"].startswith("application/problem+json")
        borough = auth(settings, "borough", "prov-1")  # same tenant code, other role: still not the owner
        assert (await client.delete(f"/subscriptions/{created['id']}", headers=borough)).status_code == 404
        assert (await client.post(f"/subscriptions/{created['id']}/rotate-secret", headers=other)).status_code == 404

        auditor = (await client.get("/subscriptions", headers=auth(settings, "auditor", "ops"))).json()
        assert len(auditor["subscriptions"]) == 1
        assert (await client.post("/subscriptions", headers=auth(settings, "auditor", "ops"),
                                  json={"url": "https://a.example/", "event_types": ["referral.invited"]})
                ).status_code == 403

        assert (await client.delete(f"/subscriptions/{created['id']}", headers=auth(settings, *PROVIDER))
                ).status_code == 204
        assert (await client.get("/subscriptions", headers=auth(settings, *PROVIDER))).json()["subscriptions"] == []
        assert (await client.get("/subscriptions")).status_code == 401


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"url": "ftp://portal.example/x", "event_types": ["referral.invited"]}, "url", "http_or_https"),
        ({"url": "http://10.0.0.5/hook", "event_types": ["referral.invited"]}, "url", "public_address"),
        ({"url": "http://169.254.169.254/", "event_types": ["referral.invited"]}, "url", "public_address"),
        ({"url": "https://portal.example/h", "event_types": []}, "event_types", "non_empty"),
        ({"url": "https://portal.example/h", "event_types": ["nope"]}, "event_types", "known_webhook_type"),
        ({"url": "https://portal.example/h", "event_types": ["referral.invited"], "contact_email": "x"},
         "contact_email", "email"),
        ({"event_types": ["referral.invited"]}, "url", "missing"),
    ],
)
async def test_bad_subscriptions_are_refused_and_nothing_recorded(
    tmp_path: Path, body: dict[str, Any], field: str, rule: str
) -> None:
    settings = make_settings(tmp_path, webhook_allow_private=False)
    async with running(settings) as (app, client):
        response = await client.post("/subscriptions", headers=auth(settings, *PROVIDER), json=body)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert (problem["field"], problem["rule"]) == (field, rule)
        assert problem["detail"]
        assert (await client.get("/subscriptions", headers=auth(settings, *PROVIDER))).json()["subscriptions"] == []
        assert await app.state.runtime.store.read_all() == []


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"url": "ftp://portal.example/x"}, "url", "http_or_https"),
        ({"url": "https://user:pw@portal.example/"}, "url", "no_credentials"),
        ({"url": "http://10.0.0.5/hook"}, "url", "public_address"),
        ({"url": "https://portal.example/" + "x" * 2048}, "url", "max_length"),
        ({"event_types": []}, "event_types", "non_empty"),
        ({"event_types": ["referral.invited", "nope"]}, "event_types", "known_webhook_type"),
        ({"event_types": "referral.invited"}, "event_types", "list_type"),
        ({"contact_email": "not-an-address"}, "contact_email", "email"),
        ({"secret": "whsec_x"}, "secret", "extra_forbidden"),
    ],
)
async def test_bad_changes_are_refused_and_nothing_recorded(
    tmp_path: Path, body: dict[str, Any], field: str, rule: str
) -> None:
    settings = make_settings(tmp_path, webhook_allow_private=False)
    async with running(settings) as (app, client):
        created = await subscribe(client, settings, "https://portal.example/hooks")
        before = await app.state.runtime.store.read_all()
        response = await client.patch(f"/subscriptions/{created['id']}", headers=auth(settings, *PROVIDER), json=body)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert (response.json()["field"], response.json()["rule"]) == (field, rule)
        assert await app.state.runtime.store.read_all() == before


async def test_a_change_is_recorded_and_shown(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, webhook_allow_private=False)
    async with running(settings) as (app, client):
        created = await subscribe(client, settings, "https://portal.example/hooks")
        changed = await client.patch(f"/subscriptions/{created['id']}", headers=auth(settings, *PROVIDER), json={
            "url": "  https://portal.example/v2  ", "event_types": ["shortlist.updated", "referral.invited"],
            "contact_email": "dev@prov-1.example"})
        assert changed.status_code == 200, changed.text
        assert {k: changed.json()[k] for k in ("url", "event_types", "contact_email")} == {
            "url": "https://portal.example/v2", "event_types": ["referral.invited", "shortlist.updated"],
            "contact_email": "dev@prov-1.example"}
        [updated] = [e for e in await app.state.runtime.store.read_all() if e.type == "subscription-updated"]
        assert updated.data["changes"] == {"url": "https://portal.example/v2", "event_types": ["referral.invited",
                                           "shortlist.updated"], "contact_email": "dev@prov-1.example"}
        unchanged = await client.patch(f"/subscriptions/{created['id']}", headers=auth(settings, *PROVIDER),
                                       json={"url": None, "event_types": ["referral.invited", "shortlist.updated"]})
        assert unchanged.status_code == 200
        assert len([e for e in await app.state.runtime.store.read_all() if e.type == "subscription-updated"]) == 1


async def test_rotation_returns_a_new_secret_and_both_sign_meanwhile(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with run_receiver(WebhookReceiver()) as receiver, running(settings) as (app, client):
        created = await subscribe(client, settings, receiver.url)
        rotated = await client.post(f"/subscriptions/{created['id']}/rotate-secret", headers=auth(settings, *PROVIDER))
        assert rotated.status_code == 200
        new_secret = rotated.json()["secret"]
        assert new_secret != created["secret"] and rotated.json()["previous_secret_valid_until"]
        receiver.secret = new_secret
        await request_notification(app)
        await wait_for(lambda: receiver.accepted)
        received = receiver.requests[0]
        Webhook(created["secret"]).verify(received.body, received.headers)
        Webhook(new_secret).verify(received.body, received.headers)


# --- webhooks --------------------------------------------------------------------------------


async def test_signed_webhook_verified_by_the_receiver_and_logged(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with run_receiver(WebhookReceiver()) as receiver, running(settings) as (app, client):
        created = await subscribe(client, settings, receiver.url)
        receiver.secret = created["secret"]
        notification_id = await request_notification(app)
        await wait_for(lambda: receiver.accepted)
        received = receiver.accepted[0]
        assert received.verified
        assert received.headers["webhook-id"] == f"msg_{notification_id}"
        assert received.headers["content-type"] == "application/json"
        assert received.payload["type"] == "referral.invited"
        assert received.payload["timestamp"].endswith("Z")
        assert received.payload["data"]["primary_need"] == "ASD"

        async def delivered() -> list[dict[str, Any]]:
            log = await deliveries(client, settings, status="delivered")
            return log if log else []

        log = await wait_for(delivered)
        entry = log[0]
        assert entry["subscription_id"] == created["id"] and entry["channel"] == "webhook"
        assert entry["event_type"] == "referral.invited"
        assert entry["webhook_id"] == f"msg_{notification_id}"
        [attempt] = entry["attempts"]
        assert attempt["status_code"] == 200 and attempt["latency_ms"] >= 0 and attempt["attempted_at"]
        assert await deliveries(client, settings, ("provider", "prov-2")) == []
        assert await deliveries(client, settings, status="failed") == []
        assert await deliveries(client, settings, event_type="shortlist.updated") == []
        assert len(await deliveries(client, settings, subscription_id=created["id"])) == 1
        bad = await client.get("/deliveries", headers=auth(settings, *PROVIDER), params={"status": "lost"})
        assert bad.status_code == 422 and bad.json()["field"] == "status"

        async def audited() -> list[Envelope]:
            return [e for e in await topic_events(app, "audit") if e.type == "delivery-recorded"]

        [record] = await wait_for(audited)
        assert record.subject == notification_id and record.source == "placematch/notification"
        assert {k: record.data[k] for k in ("notification_id", "subscription_id", "channel", "status", "attempts",
                                            "status_code")} == {
            "notification_id": notification_id, "subscription_id": created["id"], "channel": "webhook",
            "status": "delivered", "attempts": 1, "status_code": 200}


async def test_fails_twice_then_succeeds_with_one_webhook_id(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with run_receiver(WebhookReceiver()) as receiver, running(settings) as (app, client):
        created = await subscribe(client, settings, receiver.url)
        receiver.secret = created["secret"]
        receiver.answer(500, (429, {"Retry-After": "0"}))
        notification_id = await request_notification(app)
        await wait_for(lambda: receiver.accepted)
        await wait_for(lambda: deliveries(client, settings, status="delivered"))
        assert [r.answered for r in receiver.requests] == [500, 429, 200]
        assert len(receiver.accepted) == 1
        assert {r.headers["webhook-id"] for r in receiver.requests} == {f"msg_{notification_id}"}
        assert len({r.body for r in receiver.requests}) == 1
        assert all(r.verified for r in receiver.requests)
        [entry] = await deliveries(client, settings)
        assert [(a["attempt"], a["status_code"], a["result"]) for a in entry["attempts"]] == [
            (1, 500, "retryable"), (2, 429, "retryable"), (3, 200, "succeeded")]


@pytest.mark.parametrize("status", [410, 400])
async def test_other_4xx_is_not_retried_and_goes_to_the_dlq(tmp_path: Path, status: int) -> None:
    settings = make_settings(tmp_path)
    async with run_receiver(WebhookReceiver()) as receiver, running(settings) as (app, client):
        created = await subscribe(client, settings, receiver.url)
        receiver.secret = created["secret"]
        receiver.answer(status)
        notification_id = await request_notification(app)
        [entry] = await wait_for(lambda: deliveries(client, settings, status="failed"))
        assert entry["failure_reason"] == "rejected" and entry["last_status_code"] == status

        async def dead_lettered() -> list[Envelope]:
            return await topic_events(app, "notifications.dlq")

        [dead] = await wait_for(dead_lettered)
        assert dead.type == "delivery-failed"
        assert dead.data["request"]["notification_id"] == notification_id
        assert dead.data["request"]["webhook_type"] == "referral.invited"
        async def audited() -> list[Envelope]:
            return [e for e in await topic_events(app, "audit") if e.type == "delivery-recorded"]

        [record] = await wait_for(audited)
        assert record.data["status"] == "failed" and record.data["status_code"] == status
        assert len(receiver.requests) == 1

        # the owner fixes the endpoint and redelivers from the log: same webhook-id, now accepted
        retried = await client.post(f"/deliveries/{entry['id']}/retry", headers=auth(settings, *PROVIDER))
        assert retried.status_code == 202, retried.text
        assert (await client.post(f"/deliveries/{entry['id']}/retry", headers=auth(settings, "provider", "prov-2"))
                ).status_code == 404
        await wait_for(lambda: deliveries(client, settings, status="delivered"))
        assert [r.answered for r in receiver.requests] == [status, 200]
        assert receiver.requests[1].headers["webhook-id"] == receiver.requests[0].headers["webhook-id"]


async def test_last_attempt_fails_the_delivery(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, webhook_max_attempts=3)
    async with run_receiver(WebhookReceiver(default=503)) as receiver, running(settings) as (app, client):
        await subscribe(client, settings, receiver.url)
        await request_notification(app)
        [entry] = await wait_for(lambda: deliveries(client, settings, status="failed"))
        assert entry["failure_reason"] == "attempts_exhausted"
        assert len(entry["attempts"]) == 3 and len(receiver.requests) == 3


async def test_a_restart_between_attempts_still_completes_the_retry(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, webhook_retry_base_seconds=1.0)
    async with run_receiver(WebhookReceiver()) as receiver:
        async with running(settings) as (app, client):
            created = await subscribe(client, settings, receiver.url)
            receiver.secret = created["secret"]
            receiver.answer(503)
            await request_notification(app)
            await wait_for(lambda: receiver.requests)

            async def first_attempt_recorded() -> bool:
                return [len(d["attempts"]) for d in await deliveries(client, settings)] == [1]

            await wait_for(first_attempt_recorded)
            [entry] = await deliveries(client, settings)
            assert entry["status"] == "pending" and entry["next_attempt_at"]
        assert len(receiver.requests) == 1  # stopped before the retry was due

        async with running(settings) as (app, client):
            [entry] = await wait_for(lambda: deliveries(client, settings, status="delivered"))
            assert [a["status_code"] for a in entry["attempts"]] == [503, 200]
        assert [r.answered for r in receiver.requests] == [503, 200]
        assert receiver.requests[0].headers["webhook-id"] == receiver.requests[1].headers["webhook-id"]


async def test_a_stop_during_an_attempt_gives_the_delivery_back(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with run_receiver(WebhookReceiver()) as receiver:
        async with running(settings) as (app, client):
            created = await subscribe(client, settings, receiver.url)
            receiver.secret = created["secret"]
            receiver.delays = [1.0]
            await request_notification(app)
            await wait_for(lambda: deliveries(client, settings))
            await wait_for(lambda: receiver.delays == [])  # the first attempt is in flight
        async with running(settings) as (app, client):
            # not held back by the dead attempt's lease: redelivered at once
            await wait_for(lambda: deliveries(client, settings, status="delivered"), timeout=5)
        assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
        assert len(receiver.accepted) >= 1


async def test_an_endpoint_failing_too_long_is_disabled_and_its_owner_emailed(tmp_path: Path) -> None:
    with run_mail_catcher() as mail:
        settings = make_settings(tmp_path, email_enabled=True, smtp_port=mail.port,
                                 webhook_disable_after_seconds=0, webhook_max_attempts=1)
        async with run_receiver(WebhookReceiver(default=500)) as receiver, running(settings) as (app, client):
            created = await subscribe(client, settings, receiver.url, contact_email="dev@prov-1.example")
            await request_notification(app)

            async def disabled() -> bool:
                response = await client.get(f"/subscriptions/{created['id']}", headers=auth(settings, *PROVIDER))
                return response.json()["status"] == "disabled"

            await wait_for(disabled)
            await wait_for(lambda: mail.messages)
            message = mail.messages[0]
            assert message["To"] == "dev@prov-1.example"
            assert "disabled" in message["Subject"]
            assert receiver.url in message.get_body(("plain",)).get_content()
            # nothing more goes to a disabled endpoint; redelivery needs it enabled first
            await request_notification(app)
            [failed, *_] = await deliveries(client, settings, channel="webhook")
            refused = await client.post(f"/deliveries/{failed['id']}/retry", headers=auth(settings, *PROVIDER))
            assert refused.status_code == 409
            enabled = await client.post(f"/subscriptions/{created['id']}/enable", headers=auth(settings, *PROVIDER))
            assert enabled.json()["status"] == "active"
            assert len(receiver.requests) == 1


# --- email -----------------------------------------------------------------------------------


async def test_a_provider_without_webhook_hears_by_email(tmp_path: Path) -> None:
    with run_mail_catcher() as mail:
        settings = make_settings(tmp_path, email_enabled=True, smtp_port=mail.port,
                                 email_sender="placematch <alerts@placematch.example>")
        async with running(settings) as (app, client):
            notification_id = await request_notification(app, email="admissions@riverside.example")
            await wait_for(lambda: mail.messages)
            message = mail.messages[0]
            assert mail.envelopes[0] == ("alerts@placematch.example", ["admissions@riverside.example"])
            assert message["From"] == "placematch <alerts@placematch.example>"
            assert "invited" in message["Subject"]
            assert message.get_content_type() == "multipart/alternative"
            assert "Primary need: ASD" in message.get_body(("plain",)).get_content()
            assert "Croydon" in message.get_body(("html",)).get_content()
            [entry] = await wait_for(lambda: deliveries(client, settings, status="delivered"))
            assert entry["channel"] == "email" and entry["attempts"][0]["status_code"] == 250
            assert entry["notification_id"] == notification_id


# --- dispatcher ------------------------------------------------------------------------------


async def test_a_slow_endpoint_does_not_hold_back_the_others(tmp_path: Path) -> None:
    """Attempts run as a pool: while one endpoint stalls, deliveries to others keep going out."""
    settings = make_settings(tmp_path, delivery_concurrency=4, webhook_timeout_seconds=8.0)
    async with run_receiver(WebhookReceiver()) as slow, run_receiver(WebhookReceiver()) as fast, \
            running(settings) as (app, client):
        await subscribe(client, settings, slow.url, ("provider", "prov-slow"))
        await subscribe(client, settings, fast.url, ("provider", "prov-fast"))
        slow.delays = [4.0]
        await request_notification(app, tenant="prov-slow")
        await wait_for(lambda: slow.delays == [])  # the slow attempt is in flight
        for _ in range(6):
            await request_notification(app, tenant="prov-fast")
        await wait_for(lambda: len(fast.accepted) == 6, timeout=3.0)
        assert slow.accepted == []  # still stalled when the others were all through
        await wait_for(lambda: slow.accepted, timeout=10)


async def test_outcomes_recorded_together_as_one_by_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`settle_many` records several outcomes in one transaction: each delivery's events, its audit
    record, and the endpoint's health events as if settled in turn (one `subscription-failing`,
    not one per failed attempt), and the hash chain still verifies."""
    from datetime import datetime

    from services.notification.retries import AttemptOutcome, AttemptResult
    from shared.integrity import verify_store

    settings = make_settings(tmp_path, webhook_retry_base_seconds=3600.0)
    async with run_receiver(WebhookReceiver(default=503)) as receiver, running(settings) as (app, client):
        created = await subscribe(client, settings, receiver.url)
        for _ in range(4):
            await request_notification(app)

        async def attempted_once() -> list[dict[str, Any]]:
            log = await deliveries(client, settings)
            assert len(log) == 4 and all(len(d["attempts"]) == 1 for d in log)
            return log

        log = await wait_for(attempted_once)  # all four failed once; their next attempt is an hour away
        dispatcher, store = app.state.dispatcher, app.state.runtime.store

        async def not_alone(*_: Any) -> None:
            raise AssertionError("settled one by one")

        monkeypatch.setattr(dispatcher, "settle", not_alone)
        now = datetime.now(UTC)
        outcomes = [AttemptOutcome(now, 503, 5, AttemptResult.RETRYABLE),
                    AttemptOutcome(now, 200, 5, AttemptResult.SUCCEEDED),
                    AttemptOutcome(now, 410, 5, AttemptResult.REJECTED),
                    AttemptOutcome(now, 503, 5, AttemptResult.RETRYABLE)]
        ids = [d["id"] for d in sorted(log, key=lambda d: d["id"])]
        await dispatcher.settle_many(list(zip(ids, outcomes, strict=True)))

        def types(stream: list[Envelope]) -> list[str]:
            return [e.type for e in stream]

        streams = [await store.read_stream(i) for i in ids]
        assert [types(s)[2:] for s in streams] == [
            ["delivery-attempted"], ["delivery-attempted", "delivery-succeeded"],
            ["delivery-attempted", "delivery-failed"], ["delivery-attempted"]]
        assert [[e.data.get("attempt") for e in s if e.type == "delivery-attempted"] for s in streams] == [[1, 2]] * 4
        # the endpoint failed (first attempts), recovered (the 200), and failed again (the 410)
        assert types(await store.read_stream(created["id"]))[1:] == [
            "subscription-failing", "subscription-recovered", "subscription-failing"]
        recorded = [e for e in await store.read_all(0, 10_000) if e.type == "delivery-recorded"]
        assert sorted(e.data["status"] for e in recorded[-2:]) == ["delivered", "failed"]
        by_id = {d["id"]: d for d in await deliveries(client, settings)}
        assert [by_id[i]["status"] for i in ids] == ["pending", "delivered", "failed", "pending"]
        assert [len(by_id[i]["attempts"]) for i in ids] == [2, 2, 2, 2]
        assert (await verify_store(app.state.runtime.db)).ok


@pytest.mark.parametrize(("method", "path", "body", "field", "rule"), [
    ("GET", "/deliveries?before=2026%00", None, "before", "nul_character"),  # a NUL PostgreSQL would choke on
    ("GET", "/subscriptions/%00", None, "path", "nul_character"),
    ("POST", "/subscriptions", b'{"url": "https://portal.example/hooks", "url": "https://evil.example/",'
                               b' "event_types": ["referral.invited"]}', "url", "duplicate_key"),
    ("POST", "/subscriptions", b'{"url": "https://portal.example/hooks\\u0000", "event_types": ["referral.invited"]}',
     "url", "nul_character"),
])
async def test_nuls_and_duplicate_keys_are_422_naming_the_field(
        tmp_path: Path, method: str, path: str, body: bytes | None, field: str, rule: str) -> None:
    """Issue 12: accepted before (the last `url` won; a NUL reached the database)."""
    settings = make_settings(tmp_path)
    async with running(settings) as (app, client):
        response = await client.request(method, path, content=body, headers={
            **auth(settings, *PROVIDER), "content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert (response.json()["field"], response.json()["rule"]) == (field, rule)
        assert await app.state.runtime.store.read_all() == []
