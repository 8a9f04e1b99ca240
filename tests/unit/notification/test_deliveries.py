"""Deliveries: the scheduled body, attempts, settling, redelivery, the audit record."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from services.notification.deliveries import DeliveryStatus, delivery_recorded
from services.notification.domain import Owner
from services.notification.retries import RetryPolicy
from shared.errors import InvalidTransition
from tests.support.notification import OTHER_PROVIDER, PROVIDER, T0, outcome, scheduled_delivery


def test_scheduled_delivery_carries_a_stable_body_and_id() -> None:
    d = scheduled_delivery()
    assert d.status is DeliveryStatus.PENDING
    assert d.message_id == "msg_n-1"
    assert d.next_attempt_at == T0
    body = json.loads(d.body)
    assert body == {
        "type": "referral.invited",
        "timestamp": "2026-06-01T09:00:00Z",
        "data": {"referral_id": "r-1", "age_at_start": 12, "district": "Croydon"},
    }


def test_fails_twice_then_succeeds() -> None:
    d = scheduled_delivery()
    policy = RetryPolicy(jitter=0)
    first = d.record_attempt(outcome(503), policy=policy, jitter_sample=0.5)
    assert [e.type for e in first] == ["delivery-attempted"]
    assert first[0].data["next_attempt_at"] == "2026-06-01T09:00:05Z"
    d.mutate(first)
    d.mutate(d.record_attempt(outcome(None, T0 + timedelta(seconds=5)), policy=policy, jitter_sample=0.5))
    assert d.next_attempt_at == T0 + timedelta(seconds=35)
    last = d.record_attempt(outcome(200, T0 + timedelta(seconds=35)), policy=policy, jitter_sample=0.5)
    assert [e.type for e in last] == ["delivery-attempted", "delivery-succeeded"]
    d.mutate(last)
    assert d.status is DeliveryStatus.DELIVERED
    assert [a.attempt for a in d.attempts] == [1, 2, 3]
    assert d.next_attempt_at is None
    with pytest.raises(InvalidTransition):
        d.record_attempt(outcome(200), policy=policy, jitter_sample=0)


@pytest.mark.parametrize("code", [400, 410])
def test_other_4xx_is_not_retried(code: int) -> None:
    d = scheduled_delivery()
    events = d.record_attempt(outcome(code), policy=RetryPolicy(), jitter_sample=0.5)
    assert [e.type for e in events] == ["delivery-attempted", "delivery-failed"]
    failed = events[1].data
    assert {k: failed[k] for k in ("delivery_id", "attempts", "status_code", "reason", "failed_at")} == {
        "delivery_id": "d-1", "attempts": 1, "status_code": code, "reason": "rejected",
        "failed_at": "2026-06-01T09:00:00Z",
    }
    assert failed["request"]["notification_id"] == "n-1"
    assert failed["request"]["data"]["district"] == "Croydon"


def test_last_attempt_fails_the_delivery() -> None:
    d = scheduled_delivery()
    policy = RetryPolicy(max_attempts=3)
    at = T0
    for _ in range(2):
        d.mutate(d.record_attempt(outcome(500, at), policy=policy, jitter_sample=0.5))
        assert d.status is DeliveryStatus.PENDING
        at = d.next_attempt_at
    events = d.record_attempt(outcome(500, at), policy=policy, jitter_sample=0.5)
    assert events[-1].type == "delivery-failed"
    assert events[-1].data["reason"] == "attempts_exhausted"
    assert events[0].data["next_attempt_at"] is None
    d.mutate(events)
    assert d.status is DeliveryStatus.FAILED


def test_retry_after_on_429_is_honoured() -> None:
    d = scheduled_delivery()
    events = d.record_attempt(
        outcome(429, retry_after=timedelta(minutes=10)), policy=RetryPolicy(), jitter_sample=0.5
    )
    assert events[0].data["next_attempt_at"] == "2026-06-01T09:10:00Z"


def test_manual_retry_starts_a_fresh_round_with_the_same_message() -> None:
    d = scheduled_delivery()
    policy = RetryPolicy(max_attempts=1)
    d.mutate(d.record_attempt(outcome(500), policy=policy, jitter_sample=0))
    assert d.status is DeliveryStatus.FAILED
    later = T0 + timedelta(hours=1)
    d.mutate(d.request_retry(at=later, requested_by=PROVIDER))
    assert d.status is DeliveryStatus.PENDING and d.next_attempt_at == later
    events = d.record_attempt(outcome(200, later), policy=policy, jitter_sample=0)
    assert events[0].data["attempt"] == 2
    d.mutate(events)
    assert d.status is DeliveryStatus.DELIVERED and d.message_id == "msg_n-1"
    d.mutate(d.request_retry(at=later, requested_by=PROVIDER))
    with pytest.raises(InvalidTransition):
        d.request_retry(at=later, requested_by=PROVIDER)


def test_manual_retry_brings_a_waiting_retry_forward() -> None:
    d = scheduled_delivery()
    d.mutate(d.record_attempt(outcome(500), policy=RetryPolicy(), jitter_sample=0))
    events = d.request_retry(at=T0 + timedelta(seconds=1), requested_by=PROVIDER)
    assert events[0].data["next_attempt_at"] == "2026-06-01T09:00:01Z"


def test_abandon_fails_a_pending_delivery_once() -> None:
    d = scheduled_delivery()
    events = d.abandon(reason="subscription_deleted", at=T0)
    assert events[0].data["reason"] == "subscription_deleted"
    d.mutate(events)
    assert d.abandon(reason="subscription_deleted", at=T0) == []


def test_audit_record_follows_events_md() -> None:
    d = scheduled_delivery()
    events = d.record_attempt(outcome(200), policy=RetryPolicy(), jitter_sample=0)
    record = delivery_recorded(d, settled=events[-1])
    assert {k: record[k] for k in ("notification_id", "delivery_id", "subscription_id", "channel", "status",
                                    "attempts", "status_code")} == {
        "notification_id": "n-1", "delivery_id": "d-1", "subscription_id": "sub-1", "channel": "webhook",
        "status": "delivered", "attempts": 1, "status_code": 200,
    }


def test_visibility_of_deliveries() -> None:
    d = scheduled_delivery()
    assert d.visible_to(PROVIDER)
    assert not d.visible_to(OTHER_PROVIDER)
    assert d.visible_to(Owner("auditor", "ops"))
