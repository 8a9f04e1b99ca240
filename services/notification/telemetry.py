"""Notification's metrics and spans: webhook attempts and deliveries, endpoints disabled, emails,
and the end-to-end time from a referral raised to the first webhook about it.

The dispatcher calls these next to where it learns an outcome; what they need of a delivery's
history (the trace and the origin time its `delivery-scheduled` event carries) is read here.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared import metrics, tracing
from shared.events import Envelope
from shared.schema import events
from shared.vocabulary import parse_instant

_registry = metrics.registry_for("notification")
WEBHOOK_ATTEMPTS = Counter("placematch_webhook_attempts_total", "Webhook attempts, by outcome (succeeded, "
                           "retryable, rejected, ...).", ["outcome"], registry=_registry)
WEBHOOK_ATTEMPT_SECONDS = Histogram("placematch_webhook_attempt_duration_seconds", "Time one webhook attempt took.",
                                    buckets=metrics.LATENCY_BUCKETS, registry=_registry)
WEBHOOK_DELIVERIES = Counter("placematch_webhook_deliveries_total", "Webhook deliveries settled, by outcome "
                             "(delivered, failed).", ["outcome"], registry=_registry)
SUBSCRIPTIONS_DISABLED = Counter("placematch_webhook_subscriptions_disabled_total", "Webhook endpoints disabled "
                                 "after failing for too long.", registry=_registry)
EMAILS = Counter("placematch_emails_total", "Email attempts, by outcome (sent, failed).", ["outcome"],
                 registry=_registry)
RAISED_TO_WEBHOOK = Histogram(
    "placematch_referral_raised_to_first_webhook_seconds",
    "From referral-raised to the first webhook about that referral delivered (per referral, as seen by this "
    "notification process).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0), registry=_registry)
_first_seen: OrderedDict[str, None] = OrderedDict()
FIRST_SEEN_KEPT = 10_000
"""Referrals whose first webhook was measured, kept to measure each once (bounded; oldest forgotten)."""


async def origin_of(conn: AsyncConnection, delivery_id: str) -> Envelope | None:
    """The delivery's first event (`delivery-scheduled`), carrying the trace and origin time of the
    request that scheduled it."""
    body = (await conn.execute(select(events.c.body).where(events.c.stream_id == delivery_id)
                               .order_by(events.c.version).limit(1))).scalar()
    return Envelope.from_json(body) if body else None


@contextlib.contextmanager
def attempt_span(delivery: Any, origin: Envelope | None) -> Iterator[None]:
    """A CLIENT span around one attempt, in the trace of the event that scheduled the delivery."""
    if not tracing.enabled():
        yield
        return
    parent = tracing.context_of(origin.traceparent, origin.tracestate) if origin else None
    channel = getattr(delivery.channel, "value", str(delivery.channel))
    with tracing.span("notification", f"{channel} {delivery.webhook_type}", kind=SpanKind.CLIENT, parent=parent,
                      attributes={"placematch.channel": channel, "placematch.webhook_type": delivery.webhook_type,
                                  "placematch.attempt": len(delivery.attempts) + 1}) as span:
        try:
            yield
        except BaseException as error:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise


def attempted(delivery: Any, outcome: Any, origin: Envelope | None) -> None:
    """Count one attempt; a first success about a referral gives the raised → webhook time."""
    result = getattr(outcome.result, "value", str(outcome.result))
    channel = getattr(delivery.channel, "value", str(delivery.channel))
    if channel == "email":
        EMAILS.labels("sent" if result == "succeeded" else "failed").inc()
        return
    WEBHOOK_ATTEMPTS.labels(result).inc()
    WEBHOOK_ATTEMPT_SECONDS.observe(max(0.0, (outcome.latency_ms or 0) / 1000))
    if result != "succeeded" or not delivery.referral_id or origin is None or not origin.origintime:
        return
    if delivery.referral_id in _first_seen:
        return
    _first_seen[delivery.referral_id] = None
    while len(_first_seen) > FIRST_SEEN_KEPT:
        _first_seen.popitem(last=False)
    finished = outcome.attempted_at.timestamp() + (outcome.latency_ms or 0) / 1000
    RAISED_TO_WEBHOOK.observe(max(0.0, finished - parse_instant(origin.origintime).timestamp()))


def settled(delivery: Any, event_type: str) -> None:
    channel = getattr(delivery.channel, "value", str(delivery.channel))
    if channel == "webhook":
        WEBHOOK_DELIVERIES.labels("delivered" if event_type == "delivery-succeeded" else "failed").inc()


def disabled() -> None:
    SUBSCRIPTIONS_DISABLED.inc()

