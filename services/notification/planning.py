"""Delivery planning: which webhooks and emails a notification request yields, and what each carries.

The request is the vocabulary's `NotificationRequest` (one wire contract: matching writes it,
notification reads it); `parse_request` is notification's judgement of one read off the topic.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from shared.errors import RuleViolation
from shared.vocabulary import NotificationRequest, WebhookType

from .domain import SUBSCRIPTION_DISABLED, WEBHOOK_TYPES, Channel, iso
from .subscriptions import Subscription

DELIVERY_NAMESPACE = uuid.UUID("5b0f7a8e-3c1d-4b7e-9a51-8f2d6c0e4a13")


def parse_request(data: Mapping[str, Any]) -> NotificationRequest:
    """The `data` of a `notification-requested` event (shared/EVENTS.md), or `RuleViolation` naming
    what makes it unusable (the consumer dead-letters it)."""
    for name in ("notification_id", "webhook_type", "recipient"):
        if not data.get(name):
            raise RuleViolation(f"A notification request needs {name}.", field=name, rule="required")
    recipient = data["recipient"]
    if not isinstance(recipient, Mapping) or not recipient.get("role") or not recipient.get("tenant"):
        raise RuleViolation(
            "A notification request's recipient needs role and tenant.", field="recipient", rule="required"
        )
    if data["webhook_type"] not in WEBHOOK_TYPES:
        raise RuleViolation(
            f"Unknown webhook type {data['webhook_type']}.", field="webhook_type", rule="known_webhook_type"
        )
    if not isinstance(data.get("data") or {}, Mapping):
        raise RuleViolation("A notification's data must be an object.", field="data", rule="object")
    return NotificationRequest.from_data(data)


PLACEMENT_TYPES: frozenset[str] = frozenset({
    WebhookType.PLACEMENT_STARTED, WebhookType.PLACEMENT_ENDED, WebhookType.PLACEMENT_REVIEW_DUE,
    WebhookType.FEE_CHANGE_REQUESTED, WebhookType.FEE_CHANGE_DECIDED, WebhookType.AWARD_COLLAPSED})
"""Requested by the placement service (issue 16), which holds no contact addresses: their email goes
to the address notification last saw named for the recipient (`recipient_emails`)."""


def with_remembered_email(request: NotificationRequest, remembered: str | None) -> NotificationRequest:
    """A placement notification without an address takes the recipient's remembered one; any other
    request, or one that names its own address, is left as it is."""
    if request.email or not remembered or request.webhook_type not in PLACEMENT_TYPES:
        return request
    return replace(request, email=remembered)


@dataclass(frozen=True)
class PlannedDelivery:
    channel: Channel
    target: str
    subscription_id: str | None = None


def plan_deliveries(
    request: NotificationRequest, subscriptions: Iterable[Subscription], *, email_always: bool = False
) -> list[PlannedDelivery]:
    """Who gets this notification, and how.

    One webhook per active subscription of the recipient that wants this type. Email goes to the
    request's address when no webhook takes it (so a provider with no portal still hears of every
    invitation), or always when `email_always`.
    """
    webhooks = [
        PlannedDelivery(Channel.WEBHOOK, s.url, s.id)
        for s in sorted(subscriptions, key=lambda s: s.id)
        if s.owner == request.recipient and s.wants(request.webhook_type)
    ]
    planned = list(webhooks)
    if request.email and (email_always or not webhooks):
        planned.append(PlannedDelivery(Channel.EMAIL, request.email))
    return planned


def webhook_body(request: NotificationRequest, *, at: datetime) -> str:
    """The JSON body, serialised once at scheduling so every retry sends the same bytes."""
    return json.dumps(
        {"type": request.webhook_type, "timestamp": iso(at), "data": request.data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def message_id(notification_id: str) -> str:
    """`webhook-id`: one per notification, the same on every attempt and every endpoint, so a
    receiver can de-duplicate."""
    return f"msg_{notification_id}"


def delivery_id_for(notification_id: str, planned: PlannedDelivery) -> str:
    """Deterministic, so a request handled twice schedules the same deliveries."""
    target = planned.subscription_id or f"email:{planned.target.lower()}"
    return str(uuid.uuid5(DELIVERY_NAMESPACE, f"{notification_id}/{target}"))


def endpoint_disabled_request(subscription: Subscription, disabled: Mapping[str, Any],
                              email: str) -> NotificationRequest:
    """The email telling a subscription's owner that its endpoint was disabled (`disabled`: the
    `subscription-disabled` event's data)."""
    assert subscription.owner is not None
    return NotificationRequest(
        notification_id=f"disabled-{subscription.id}-{disabled['disabled_at']}",
        webhook_type=SUBSCRIPTION_DISABLED,
        recipient=subscription.owner,
        email=email,
        referral_id=None,
        data={"subscription_id": subscription.id, "url": subscription.url,
              "failing_since": disabled.get("failing_since"), "disabled_at": disabled["disabled_at"]},
    )
