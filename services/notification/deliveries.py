"""Deliveries: one notification on its way to one endpoint (webhook or email), every attempt, and
how it settled (delivered, or failed and dead-lettered)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from shared.aggregate import Aggregate, NewEvent
from shared.errors import InvalidTransition
from shared.vocabulary import NotificationRequest

from .domain import OVERSEER_ROLES, Channel, Owner, iso, parse_instant
from .planning import PlannedDelivery, message_id, webhook_body
from .retries import AttemptOutcome, AttemptResult, RetryPolicy


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass
class Attempt:
    attempt: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    result: AttemptResult
    error: str | None
    next_attempt_at: datetime | None


class Delivery(Aggregate):
    """One notification on its way to one endpoint (webhook or email), with every attempt."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.notification_id: str = ""
        self.channel: Channel = Channel.WEBHOOK
        self.subscription_id: str | None = None
        self.target: str = ""
        self.webhook_type: str = ""
        self.recipient: Owner | None = None
        self.referral_id: str | None = None
        self.message_id: str = ""
        self.body: str = ""
        self.data: dict[str, Any] = {}
        self.status: DeliveryStatus = DeliveryStatus.PENDING
        self.attempts: list[Attempt] = []
        self.round_attempts: int = 0
        self.next_attempt_at: datetime | None = None
        self.scheduled_at: datetime | None = None

    @staticmethod
    def schedule(
        delivery_id: str,
        *,
        request: NotificationRequest,
        planned: PlannedDelivery,
        at: datetime,
    ) -> list[NewEvent]:
        return [
            NewEvent(
                "delivery-scheduled",
                {
                    "delivery_id": delivery_id,
                    "notification_id": request.notification_id,
                    "channel": planned.channel.value,
                    "subscription_id": planned.subscription_id,
                    "target": planned.target,
                    "webhook_type": request.webhook_type,
                    "recipient": request.recipient.to_data(),
                    "referral_id": request.referral_id,
                    "message_id": message_id(request.notification_id),
                    "body": webhook_body(request, at=at),
                    "data": request.data,
                    "scheduled_at": iso(at),
                    "next_attempt_at": iso(at),
                },
            )
        ]

    def record_attempt(
        self, outcome: AttemptOutcome, *, policy: RetryPolicy, jitter_sample: float
    ) -> list[NewEvent]:
        """Record one attempt; schedule the next one, or settle the delivery."""
        if self.status is not DeliveryStatus.PENDING:
            raise InvalidTransition(f"Delivery {self.id} is {self.status}; nothing to attempt.")
        number = len(self.attempts) + 1
        round_number = self.round_attempts + 1
        result = outcome.result
        next_at: datetime | None = None
        if result is AttemptResult.RETRYABLE and round_number < policy.max_attempts:
            next_at = outcome.attempted_at + policy.delay(
                round_number, jitter_sample=jitter_sample, retry_after=outcome.retry_after
            )
        events = [
            NewEvent(
                "delivery-attempted",
                {
                    "delivery_id": self.id,
                    "attempt": number,
                    "attempted_at": iso(outcome.attempted_at),
                    "status_code": outcome.status_code,
                    "latency_ms": outcome.latency_ms,
                    "error": outcome.error,
                    "result": result.value,
                    "next_attempt_at": iso(next_at) if next_at else None,
                },
            )
        ]
        if result is AttemptResult.SUCCEEDED:
            events.append(
                NewEvent(
                    "delivery-succeeded",
                    {
                        "delivery_id": self.id,
                        "attempts": number,
                        "status_code": outcome.status_code,
                        "delivered_at": iso(outcome.attempted_at),
                    },
                )
            )
        elif next_at is None:
            reason = "rejected" if result is AttemptResult.REJECTED else "attempts_exhausted"
            events.append(self._failed_event(reason, outcome.attempted_at, outcome.status_code, number))
        return events

    def abandon(self, *, reason: str, at: datetime) -> list[NewEvent]:
        """Give up without attempting, e.g. the subscription was deleted or disabled meanwhile."""
        if self.status is not DeliveryStatus.PENDING:
            return []
        last_code = self.attempts[-1].status_code if self.attempts else None
        return [self._failed_event(reason, at, last_code, len(self.attempts))]

    def request_retry(self, *, at: datetime, requested_by: Owner) -> list[NewEvent]:
        """Redeliver now, with a fresh round of the retry schedule; same `webhook-id` and body."""
        if self.status is DeliveryStatus.PENDING and (self.next_attempt_at is None or self.next_attempt_at <= at):
            raise InvalidTransition(f"Delivery {self.id} is already being delivered.")
        return [
            NewEvent(
                "delivery-retry-requested",
                {
                    "delivery_id": self.id,
                    "requested_at": iso(at),
                    "requested_by": requested_by.to_data(),
                    "next_attempt_at": iso(at),
                },
            )
        ]

    def visible_to(self, viewer: Owner) -> bool:
        """Recipients see their own deliveries; commissioners and auditors oversee them all."""
        return viewer.role in OVERSEER_ROLES or viewer == self.recipient

    def apply(self, type: str, data: dict[str, Any]) -> None:
        if type == "delivery-scheduled":
            self.notification_id = data["notification_id"]
            self.channel = Channel(data["channel"])
            self.subscription_id = data.get("subscription_id")
            self.target = data["target"]
            self.webhook_type = data["webhook_type"]
            self.recipient = Owner.from_data(data["recipient"])
            self.referral_id = data.get("referral_id")
            self.message_id = data["message_id"]
            self.body = data["body"]
            self.data = dict(data.get("data") or {})
            self.scheduled_at = parse_instant(data["scheduled_at"])
            self.next_attempt_at = parse_instant(data["next_attempt_at"])
            self.status = DeliveryStatus.PENDING
        elif type == "delivery-attempted":
            next_at = parse_instant(data["next_attempt_at"]) if data.get("next_attempt_at") else None
            self.attempts.append(
                Attempt(
                    attempt=data["attempt"],
                    attempted_at=parse_instant(data["attempted_at"]),
                    status_code=data.get("status_code"),
                    latency_ms=data.get("latency_ms", 0),
                    result=AttemptResult(data["result"]),
                    error=data.get("error"),
                    next_attempt_at=next_at,
                )
            )
            self.round_attempts += 1
            self.next_attempt_at = next_at
        elif type == "delivery-succeeded":
            self.status = DeliveryStatus.DELIVERED
            self.next_attempt_at = None
        elif type == "delivery-failed":
            self.status = DeliveryStatus.FAILED
            self.next_attempt_at = None
        elif type == "delivery-retry-requested":
            self.status = DeliveryStatus.PENDING
            self.round_attempts = 0
            self.next_attempt_at = parse_instant(data["next_attempt_at"])

    def _failed_event(self, reason: str, at: datetime, status_code: int | None, attempts: int) -> NewEvent:
        """`delivery-failed` also goes to `placematch.notifications.dlq`, so it carries the
        request it failed to deliver: an operator can re-publish it as it stands."""
        return NewEvent(
            "delivery-failed",
            {
                "delivery_id": self.id,
                "attempts": attempts,
                "status_code": status_code,
                "reason": reason,
                "failed_at": iso(at),
                "channel": self.channel.value,
                "subscription_id": self.subscription_id,
                "request": {
                    "notification_id": self.notification_id,
                    "webhook_type": self.webhook_type,
                    "recipient": self.recipient.to_data() if self.recipient else None,
                    "email": self.target if self.channel is Channel.EMAIL else None,
                    "referral_id": self.referral_id,
                    "data": self.data,
                },
            },
        )


def delivery_recorded(delivery: Delivery, *, settled: NewEvent) -> dict[str, Any]:
    """The `data` of the `delivery-recorded` audit event (shared/EVENTS.md) for a settling event
    (`delivery-succeeded` or `delivery-failed`) of `delivery`."""
    status = "delivered" if settled.type == "delivery-succeeded" else "failed"
    return {
        "notification_id": delivery.notification_id,
        "delivery_id": delivery.id,
        "subscription_id": delivery.subscription_id,
        "channel": delivery.channel.value,
        "status": status,
        "attempts": settled.data["attempts"],
        "status_code": settled.data.get("status_code"),
        "webhook_type": delivery.webhook_type,
        "recipient": delivery.recipient.to_data() if delivery.recipient else None,
        "referral_id": delivery.referral_id,
        "reason": settled.data.get("reason"),
        "recorded_at": settled.data.get("delivered_at") or settled.data.get("failed_at"),
    }
