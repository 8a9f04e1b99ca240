"""Notification service on real Kafka and real PostgreSQL: signed webhooks, retries across a
restart, the audit trail and the DLQ on Kafka, email over real SMTP."""
from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.notification.app import create_app
from services.notification.settings import NotificationSettings
from shared.events import Envelope
from shared.testing import auth, service_client
from tests.helpers import wait_for
from tests.support.notification import WebhookReceiver, run_mail_catcher, run_receiver

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

PROVIDER = ("provider", "prov-int-1")


def make_settings(kafka_bootstrap: str, database_url: str, prefix: str, **overrides: Any) -> NotificationSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap, "database_url": database_url, "topic_prefix": prefix,
        "relay_poll_seconds": 0.05, "webhook_allow_private": True, "webhook_retry_base_seconds": 1.0,
        "webhook_retry_factor": 1.0, "webhook_retry_jitter": 0.0, "webhook_timeout_seconds": 3.0,
        "delivery_poll_seconds": 0.1, "email_enabled": False, **overrides,
    }
    return NotificationSettings(**values)


@contextlib.asynccontextmanager
async def running(settings: NotificationSettings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(settings)
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready(timeout=60)
        yield app, client


async def publish_request(settings: NotificationSettings, bootstrap: str, *, email: str | None = None) -> str:
    """As matching does: a notification-requested CloudEvent on placematch.notifications."""
    notification_id = str(uuid.uuid4())
    envelope = Envelope(
        type="notification-requested", subject=notification_id, source="placematch/matching",
        data={"notification_id": notification_id, "webhook_type": "referral.invited",
              "recipient": {"role": PROVIDER[0], "tenant": PROVIDER[1]}, "email": email, "referral_id": "r-42",
              "data": {"referral_id": "r-42", "primary_need": "SEMH", "age_at_start": 14,
                       "location": {"district": "Lambeth"}}},
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        message = envelope.to_kafka()
        await producer.send_and_wait(settings.topic("notifications"), message.value,
                                     key=notification_id.encode(), headers=list(message.headers.items()))
    finally:
        await producer.stop()
    return notification_id


async def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[Envelope]:
    """Distinct events of a topic (the outbox relay publishes at least once: de-duplicate by id)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"reader-{uuid.uuid4()}", enable_auto_commit=False)
    await consumer.start()
    found: list[Envelope] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < expected:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found += [Envelope.from_kafka(r.value, dict(r.headers)) for r in records]
                found = list({e.id: e for e in found}.values())
    finally:
        await consumer.stop()
    return found


async def deliveries(client: httpx.AsyncClient, settings: NotificationSettings, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/deliveries", headers=auth(settings, *PROVIDER), params=params)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


async def test_retries_survive_a_restart_and_every_outcome_is_audited(
    kafka_bootstrap: str, fresh_database_url: str, kafka_topic_prefix: str
) -> None:
    settings = make_settings(kafka_bootstrap, fresh_database_url, kafka_topic_prefix)
    async with run_receiver(WebhookReceiver()) as receiver:
        async with running(settings) as (_app, client):
            created = (await client.post(
                "/subscriptions", headers=auth(settings, *PROVIDER),
                json={"url": receiver.url, "event_types": ["referral.invited"]})).json()
            receiver.secret = created["secret"]
            receiver.answer(500, 503)
            notification_id = await publish_request(settings, kafka_bootstrap)
            await wait_for(lambda: receiver.requests, timeout=30)

            async def first_attempt_recorded() -> bool:
                return [len(d["attempts"]) for d in await deliveries(client, settings)] == [1]

            await wait_for(first_attempt_recorded, timeout=30)
        # the service stops after the first failure; the second and third attempts come from a new process
        async with running(settings) as (_app, client):
            [entry] = await wait_for(lambda: deliveries(client, settings, status="delivered"), timeout=30)
        assert [r.answered for r in receiver.requests] == [500, 503, 200]
        assert len(receiver.accepted) == 1
        assert all(r.verified for r in receiver.requests)  # standardwebhooks' own verifier, in the receiver
        assert {r.headers["webhook-id"] for r in receiver.requests} == {f"msg_{notification_id}"}
        assert [a["status_code"] for a in entry["attempts"]] == [500, 503, 200]
        assert all(a["latency_ms"] >= 0 and a["attempted_at"] for a in entry["attempts"])

    [record] = await read_topic(kafka_bootstrap, settings.topic("audit"), expected=1)
    assert record.type == "delivery-recorded" and record.subject == notification_id
    assert record.source == "placematch/notification"
    assert (record.data["status"], record.data["attempts"], record.data["channel"]) == ("delivered", 3, "webhook")


async def test_a_refused_webhook_goes_to_the_dlq_and_email_reaches_smtp(
    kafka_bootstrap: str, fresh_database_url: str, kafka_topic_prefix: str
) -> None:
    with run_mail_catcher() as mail:
        settings = make_settings(kafka_bootstrap, fresh_database_url, kafka_topic_prefix,
                                 email_enabled=True, email_always=True, smtp_port=mail.port)
        async with run_receiver(WebhookReceiver(default=410)) as receiver, running(settings) as (_app, client):
            await client.post("/subscriptions", headers=auth(settings, *PROVIDER),
                              json={"url": receiver.url, "event_types": ["referral.invited"]})
            notification_id = await publish_request(settings, kafka_bootstrap, email="admissions@sunrise.example")
            [failed] = await wait_for(lambda: deliveries(client, settings, status="failed"), timeout=30)
            [sent] = await wait_for(lambda: deliveries(client, settings, status="delivered"), timeout=30)
            assert failed["channel"] == "webhook" and failed["last_status_code"] == 410
            assert len(failed["attempts"]) == 1 and len(receiver.requests) == 1
            assert sent["channel"] == "email"
            await wait_for(lambda: mail.messages)
            assert mail.envelopes == [(mail.envelopes[0][0], ["admissions@sunrise.example"])]
            assert "SEMH" in mail.messages[0].get_body(("plain",)).get_content()

    [dead] = await read_topic(kafka_bootstrap, settings.topic("notifications.dlq"), expected=1)
    assert dead.type == "delivery-failed"
    assert dead.data["request"]["notification_id"] == notification_id
    audit = await read_topic(kafka_bootstrap, settings.topic("audit"), expected=2)
    assert sorted((e.data["channel"], e.data["status"]) for e in audit) == [("email", "delivered"),
                                                                            ("webhook", "failed")]
