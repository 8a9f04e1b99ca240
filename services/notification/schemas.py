"""The notification API's machine-readable contract (issue 15), for `shared.openapi`/`shared.preconditions`."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .deliveries import DeliveryStatus


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OwnerOut(Closed):
    role: str
    tenant: str


class SubscriptionView(Closed):
    """A webhook subscription, as `projections.subscription_view` answers it."""

    id: str
    url: str
    event_types: list[str]
    status: str = Field(description="active | disabled")
    contact_email: str | None
    owner: OwnerOut
    failing_since: str | None
    disabled_reason: str | None
    created_at: str
    updated_at: str


class SubscriptionCreated(SubscriptionView):
    secret: str = Field(description="the signing secret, shown this once")


class SecretRotated(Closed):
    id: str
    secret: str = Field(description="the new signing secret, shown this once")
    previous_secret_valid_until: str | None


class SubscriptionPage(Closed):
    subscriptions: list[SubscriptionView]
    next: str | None = Field(description="cursor of the next page (also in `Link: rel=next`); null on the last")


class AttemptOut(Closed):
    attempt: int
    attempted_at: str
    status_code: int | None
    latency_ms: int | None
    result: str
    error: str | None


class DeliveryView(Closed):
    """One delivery with every attempt (`projections._delivery_view`)."""

    id: str
    notification_id: str
    subscription_id: str | None
    channel: str = Field(description="webhook | email")
    target: str
    event_type: str
    recipient: OwnerOut
    referral_id: str | None
    webhook_id: str | None
    status: DeliveryStatus
    attempt_count: int
    last_status_code: int | None
    failure_reason: str | None
    next_attempt_at: str | None
    created_at: str
    updated_at: str
    attempts: list[AttemptOut]


class DeliveryPage(Closed):
    deliveries: list[DeliveryView]
    next: str | None = Field(description="cursor of the next page (also in `Link: rel=next`); null on the last")


RESPONSES: dict[str, type[BaseModel]] = {
    "createSubscription": SubscriptionCreated, "listSubscriptions": SubscriptionPage,
    "getSubscription": SubscriptionView, "updateSubscription": SubscriptionView,
    "enableSubscription": SubscriptionView, "disableSubscription": SubscriptionView,
    "rotateSecret": SecretRotated, "listDeliveries": DeliveryPage, "getDelivery": DeliveryView,
}

ETAGS: set[tuple[str, str]] = {
    ("PATCH", "/subscriptions/{subscription_id}"), ("DELETE", "/subscriptions/{subscription_id}"),
    *{("POST", f"/subscriptions/{{subscription_id}}/{action}") for action in ("rotate-secret", "enable", "disable")},
}
"""Writes of a subscription that answer with its ETag (its stream version) and honour If-Match."""
