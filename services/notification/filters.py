"""The delivery log's query: whose deliveries a caller sees, and the filters and paging of `GET /deliveries`
(typed and checked by the request; applied by `projections.list_deliveries`)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .deliveries import DeliveryStatus
from .domain import OVERSEER_ROLES, SUBSCRIPTION_DISABLED, WEBHOOK_TYPES, Channel, Owner

DELIVERY_TYPES: frozenset[str] = WEBHOOK_TYPES | {SUBSCRIPTION_DISABLED}
"""What a delivery's `event_type` can be: a webhook type, or the endpoint-disabled email."""


@dataclass(frozen=True)
class DeliveryFilter:
    """`GET /deliveries` filters; `before` pages back (deliveries created before that instant)."""

    subscription_id: str | None = None
    status: DeliveryStatus | None = None
    event_type: str | None = None
    channel: Channel | None = None
    before: datetime | None = None
    limit: int = 100


def viewer_of(who: Owner) -> Owner | None:
    """Whose subscriptions and deliveries `who` sees: its own, or everyone's (None) for commissioners
    and auditors."""
    return None if who.role in OVERSEER_ROLES else who
