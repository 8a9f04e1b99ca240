"""Notification's commands, its reaction to the requests it consumes, the dispatcher's steps, and its queries.

Every decision is taken inside one transaction: a subscription or redelivery command in
`runtime.command`'s (the read models and the sealed secrets kept in step in it), the scheduling of
a request's deliveries in the consumer's (it gets `conn`), a dispatcher step (claim, settle,
abandon, release) in `runtime.transaction`'s. Delivery ids derive from the notification id, so a
redelivered request schedules nothing twice.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.aggregate import NewEvent
from shared.auth import Principal
from shared.errors import InvalidTransition, NotFound
from shared.events import Envelope
from shared.logs import get_logger
from shared.service import ServiceRuntime
from shared.vocabulary import NotificationRequest, format_instant, now_utc

from . import projections, telemetry
from .deliveries import Delivery, DeliveryStatus, delivery_recorded
from .domain import Channel, Owner, iso, parse_instant
from .filters import DeliveryFilter, viewer_of
from .planning import (
    PLACEMENT_TYPES,
    PlannedDelivery,
    delivery_id_for,
    endpoint_disabled_request,
    parse_request,
    plan_deliveries,
    with_remembered_email,
)
from .retries import AttemptOutcome, AttemptResult
from .settings import NotificationSettings
from .subscriptions import Subscription, SubscriptionStatus, new_signing_secret
from .vault import SecretVault, new_secret_id

log = get_logger("placematch.notification.service")

Endpoint = tuple[Subscription, bool, datetime]
"""A delivery's subscription (loaded in the transaction), whether the attempt succeeded, and when."""


class NotificationRuntime(ServiceRuntime):
    """The core runtime plus what notification's functions need: its settings, the vault of signing
    secrets, and a way to wake the dispatcher once scheduled deliveries are committed."""

    def __init__(self, settings: NotificationSettings, vault: SecretVault, **options: Any) -> None:
        self.config = settings
        self.vault = vault
        self._wake: Callable[[], None] = lambda: None
        super().__init__("notification", settings, **options)

    def on_wake(self, wake: Callable[[], None]) -> None:
        """`wake` is called whenever deliveries may have become due (the dispatcher's)."""
        self._wake = wake

    def wake_dispatcher(self) -> None:
        self._wake()


def _owner(who: Principal) -> Owner:
    return Owner(role=who.role, tenant=who.tenant)


# --------------------------------------------------------------------------- recording

async def _project(conn: AsyncConnection, _aggregate: Any, envelopes: list[Envelope]) -> None:
    await projections.project(conn, envelopes)


def _keeping_secrets(runtime: NotificationRuntime, storing: tuple[str, str, datetime] | None = None) -> Any:
    """`project` for a subscription command: the read models, and the sealed secrets kept in step
    (a rotation or deletion retires secrets), in the same transaction as the events. With
    `storing` = (secret id, secret, at), the new secret the events name is sealed in first."""
    vault = runtime.vault

    async def project(conn: AsyncConnection, subscription: Subscription, envelopes: list[Envelope]) -> None:
        if storing is not None:
            secret_id, secret, at = storing
            await vault.put(conn, subscription.id, secret_id, vault.seal(secret), at)
        await projections.project(conn, envelopes)
        await vault.follow(conn, envelopes)

    return project


async def _schedule(runtime: NotificationRuntime, conn: AsyncConnection, request: NotificationRequest,
                    planned: PlannedDelivery, at: datetime) -> str | None:
    delivery_id = delivery_id_for(request.notification_id, planned)
    if await runtime.store.stream_version(conn, delivery_id):
        return None
    events = Delivery.schedule(delivery_id, request=request, planned=planned, at=at)
    await projections.project(conn, await runtime.store.append(conn, delivery_id, 0, events))
    return delivery_id


async def _record(runtime: NotificationRuntime, conn: AsyncConnection,
                  items: Sequence[tuple[Delivery, list[NewEvent], Endpoint | None]]) -> None:
    """Append deliveries' new events, in order, in one `append_many`; a settling one also goes to
    the audit trail, and a failure to `placematch.notifications.dlq`. With an `Endpoint`, the
    endpoint's health events too (`Subscription.record_delivery_outcome`).

    The events come in the order one append each would give (delivery events, audit record,
    endpoint events), so the global append lock is held for a few statements, not three or four
    appends' worth. Deliveries of one subscription must share its `Subscription` object (each
    sees the health events of those before it)."""
    audit_topic, dlq_topic = runtime.topic("audit"), runtime.topic("notifications.dlq")
    batches: list[tuple[str, int | None, list[NewEvent], str | None]] = []
    settled: list[tuple[Delivery, NewEvent]] = []
    disabled: list[tuple[Subscription, NewEvent, datetime]] = []
    for delivery, events, endpoint in items:
        version = delivery.version
        first = len(batches)
        for event in events:
            topic = dlq_topic if event.type == "delivery-failed" else None
            if len(batches) > first and batches[-1][3] == topic:
                batches[-1][2].append(event)
            else:
                batches.append((delivery.id, version, [event], topic))
            version += 1
        delivery.mutate(events)
        for event in events:
            if event.type in ("delivery-succeeded", "delivery-failed"):
                batches.append((delivery.notification_id, None,
                                [NewEvent("delivery-recorded", delivery_recorded(delivery, settled=event))],
                                audit_topic))
                settled.append((delivery, event))
        if endpoint is not None and endpoint[0].owner is not None:
            subscription, succeeded, attempted_at = endpoint
            health = subscription.record_delivery_outcome(
                succeeded=succeeded, at=attempted_at, policy=runtime.config.disable_policy())
            if health:
                batches.append((subscription.id, subscription.version, health, None))
                subscription.mutate(health)
                disabled += [(subscription, e, attempted_at) for e in health if e.type == "subscription-disabled"]
    await projections.project(conn, await runtime.store.append_many(conn, batches))
    for delivery, event in settled:
        log.info("delivery settled", delivery_id=delivery.id, channel=delivery.channel.value,
                 status=event.type, attempts=event.data["attempts"])
        telemetry.settled(delivery, event.type)
    for subscription, event, at in disabled:
        telemetry.disabled()
        await _tell_owner_disabled(runtime, conn, subscription, event, at)


async def _tell_owner_disabled(runtime: NotificationRuntime, conn: AsyncConnection, subscription: Subscription,
                               disabled: NewEvent, at: datetime) -> None:
    assert subscription.owner is not None
    email = subscription.contact_email or await projections.email_of(conn, subscription.owner)
    if not email or not runtime.config.email_enabled:
        log.warning("endpoint disabled; no address to tell its owner", subscription_id=subscription.id)
        return
    request = endpoint_disabled_request(subscription, disabled.data, email)
    await _schedule(runtime, conn, request, PlannedDelivery(Channel.EMAIL, email), at)


# --------------------------------------------------------------------------- reactions

async def on_notification_requested(runtime: NotificationRuntime, conn: AsyncConnection, event: Envelope) -> None:
    """Schedule a request's deliveries: a webhook per subscription of the recipient that wants it,
    an email where none does (or always). `RuleViolation` when the request is unusable."""
    request = parse_request(event.data)
    at = parse_instant(event.time)
    if request.email:
        await projections.remember_email(conn, request.recipient, request.email, format_instant(at))
    elif request.webhook_type in PLACEMENT_TYPES:
        request = with_remembered_email(request, await projections.email_of(conn, request.recipient))
    if not runtime.config.email_enabled:
        request = replace(request, email=None)
    ids = await projections.subscription_ids_for(conn, request.recipient)
    subscriptions = [await runtime.store.load(Subscription, sid, conn) for sid in ids]
    planned = plan_deliveries(request, subscriptions, email_always=runtime.config.email_always)
    if not planned:
        log.info("notification has no channel: no webhook subscription and no email",
                 notification_id=request.notification_id, recipient=request.recipient.to_data())
    for plan in planned:
        await _schedule(runtime, conn, request, plan, at)
    # the consumer wakes the dispatcher once this is committed (handlers.consumers: on_commit)


# --------------------------------------------------------------------------- commands: subscriptions

async def create_subscription(runtime: NotificationRuntime, *, who: Principal, url: str, event_types: Sequence[str],
                              contact_email: str | None) -> tuple[dict[str, Any], str]:
    """A new webhook endpoint; returns its view and its signing secret (shown this once)."""
    subscription_id = str(uuid.uuid4())
    secret, secret_id, at = new_signing_secret(), new_secret_id(), now_utc()
    allow_private = runtime.config.webhook_allow_private

    def decide(conn: AsyncConnection, _subscription: Subscription) -> list[NewEvent]:
        return Subscription.create(subscription_id, owner=_owner(who), url=url, event_types=event_types,
                                   secret_id=secret_id, at=at, allow_private=allow_private,
                                   contact_email=contact_email)

    await runtime.command(Subscription, subscription_id, decide, topic=None,
                          project=_keeping_secrets(runtime, (secret_id, secret, at)))
    return await _subscription_view(runtime, subscription_id), secret


async def _owned(runtime: NotificationRuntime, who: Principal, subscription_id: str,
                 command: Callable[[Subscription], list[NewEvent]], *,
                 storing: tuple[str, str, datetime] | None = None) -> Subscription:
    """Run `command` on `who`'s own subscription (another's is not found)."""
    def decide(conn: AsyncConnection, subscription: Subscription) -> list[NewEvent]:
        subscription.ensure_owned_by(_owner(who))
        return command(subscription)

    subscription, _ = await runtime.command(Subscription, subscription_id, decide, topic=None,
                                            project=_keeping_secrets(runtime, storing))
    return subscription


async def update_subscription(runtime: NotificationRuntime, *, who: Principal, subscription_id: str,
                              url: str | None, event_types: Sequence[str] | None,
                              contact_email: str | None) -> dict[str, Any]:
    allow_private = runtime.config.webhook_allow_private
    await _owned(runtime, who, subscription_id, lambda s: s.update(
        url=url, event_types=event_types, contact_email=contact_email, allow_private=allow_private))
    return await _subscription_view(runtime, subscription_id)


async def delete_subscription(runtime: NotificationRuntime, *, who: Principal, subscription_id: str) -> None:
    at = now_utc()
    await _owned(runtime, who, subscription_id, lambda s: s.delete(at=at))


async def rotate_secret(runtime: NotificationRuntime, *, who: Principal, subscription_id: str) -> dict[str, Any]:
    """A new signing secret (returned this once); the previous one also signs during the grace period."""
    secret, secret_id, at = new_signing_secret(), new_secret_id(), now_utc()
    grace = runtime.config.secret_grace
    subscription = await _owned(runtime, who, subscription_id,
                                lambda s: s.rotate_secret(secret_id, at=at, grace=grace),
                                storing=(secret_id, secret, at))
    until = subscription.previous_valid_until
    return {"id": subscription_id, "secret": secret, "previous_secret_valid_until": iso(until) if until else None}


async def enable_subscription(runtime: NotificationRuntime, *, who: Principal, subscription_id: str) -> dict[str, Any]:
    at = now_utc()
    await _owned(runtime, who, subscription_id, lambda s: s.enable(at=at))
    return await _subscription_view(runtime, subscription_id)


async def disable_subscription(runtime: NotificationRuntime, *, who: Principal,
                               subscription_id: str) -> dict[str, Any]:
    at = now_utc()
    await _owned(runtime, who, subscription_id, lambda s: s.disable(reason="by_owner", at=at))
    return await _subscription_view(runtime, subscription_id)


# --------------------------------------------------------------------------- commands: deliveries

async def retry_delivery(runtime: NotificationRuntime, *, who: Principal, delivery_id: str) -> dict[str, Any]:
    """Redeliver now: the same webhook-id and body, a fresh round of retries. A webhook's endpoint
    must be active; a delivery `who` may not see is not found."""
    at, owner = now_utc(), _owner(who)

    async def decide(conn: AsyncConnection, delivery: Delivery) -> list[NewEvent]:
        if delivery.version == 0 or not delivery.visible_to(owner):
            raise NotFound(f"No delivery {delivery_id}.")
        if delivery.channel is Channel.WEBHOOK and delivery.subscription_id:
            subscription = await runtime.store.load(Subscription, delivery.subscription_id, conn)
            if subscription.status is not SubscriptionStatus.ACTIVE:
                raise InvalidTransition(
                    f"Subscription {subscription.id} is {subscription.status.value}; enable it before redelivering.",
                    field="subscription_id", rule="subscription_active")
        return delivery.request_retry(at=at, requested_by=owner)

    await runtime.command(Delivery, delivery_id, decide, topic=None, project=_project)
    runtime.wake_dispatcher()
    return await get_delivery(runtime, who=who, delivery_id=delivery_id)


# --------------------------------------------------------------------------- the dispatcher's steps

@dataclass(frozen=True)
class DueAttempt:
    """What an attempt needs, read in one go: the delivery, its subscription (webhooks) and the
    secrets that sign it now (an active subscription's)."""

    delivery: Delivery
    subscription: Subscription | None
    secrets: list[str]
    origin: Envelope | None = None
    """The delivery's first event: the trace and origin time of what scheduled it (telemetry)."""


async def claim_due(runtime: NotificationRuntime, *, limit: int) -> list[str]:
    """Take the lease on up to `limit` deliveries due now; return their ids."""
    now = now_utc()
    lease = now + timedelta(seconds=runtime.config.webhook_timeout_seconds + 30)

    async def claim(conn: AsyncConnection) -> list[str]:
        return await projections.claim_due(conn, format_instant(now), format_instant(lease), limit)

    return await runtime.transaction(claim)


async def due_attempt(runtime: NotificationRuntime, *, delivery_id: str) -> DueAttempt | None:
    """The delivery to attempt, or None when it is no longer pending."""
    store, now = runtime.store, now_utc()
    subscription: Subscription | None = None
    signing: list[str] = []
    async with runtime.db.read() as conn:  # one connection for every read
        delivery = await store.load(Delivery, delivery_id, conn)
        if delivery.status is not DeliveryStatus.PENDING:
            return None
        origin = await telemetry.origin_of(conn, delivery_id)
        if delivery.channel is Channel.WEBHOOK:
            assert delivery.subscription_id is not None
            subscription = await store.load(Subscription, delivery.subscription_id, conn)
            if subscription.status is SubscriptionStatus.ACTIVE:
                signing = await runtime.vault.signing_secrets(conn, subscription, now)
    return DueAttempt(delivery, subscription, signing, origin)


def _endpoint(delivery: Delivery, subscriptions: dict[str, Subscription], outcome: AttemptOutcome) -> Endpoint | None:
    if delivery.channel is Channel.WEBHOOK and delivery.subscription_id:
        return subscriptions[delivery.subscription_id], outcome.result is AttemptResult.SUCCEEDED, outcome.attempted_at
    return None


async def settle(runtime: NotificationRuntime, *, delivery_id: str, outcome: AttemptOutcome,
                 jitter_sample: float) -> None:
    """Record one attempt's outcome: the next attempt, or how the delivery settled."""
    policy = runtime.config.retry_policy()

    async def work(conn: AsyncConnection) -> None:
        delivery = await runtime.store.load(Delivery, delivery_id, conn)
        if delivery.status is not DeliveryStatus.PENDING:
            return
        subscriptions = {}
        if delivery.channel is Channel.WEBHOOK and delivery.subscription_id:
            # read before appending: the append lock is then held only for the writes
            subscriptions = {delivery.subscription_id: await runtime.store.load(
                Subscription, delivery.subscription_id, conn)}
        events = delivery.record_attempt(outcome, policy=policy, jitter_sample=jitter_sample)
        await _record(runtime, conn, [(delivery, events, _endpoint(delivery, subscriptions, outcome))])

    await runtime.transaction(work)


async def settle_many(runtime: NotificationRuntime, *, outcomes: Sequence[tuple[str, AttemptOutcome]],
                      jitter: Callable[[], float]) -> None:
    """`settle` for several attempts (of distinct deliveries) in one transaction and one append."""
    policy = runtime.config.retry_policy()
    ids = [d for d, _ in outcomes]

    async def work(conn: AsyncConnection) -> None:
        store = runtime.store
        deliveries = await store.load_many(Delivery, ids, conn)
        subscriptions = await store.load_many(Subscription, [
            d.subscription_id for d in deliveries.values() if d.channel is Channel.WEBHOOK and d.subscription_id], conn)
        records = []
        for delivery_id, outcome in outcomes:
            delivery = deliveries[delivery_id]
            if delivery.status is not DeliveryStatus.PENDING:
                continue
            events = delivery.record_attempt(outcome, policy=policy, jitter_sample=jitter())
            records.append((delivery, events, _endpoint(delivery, subscriptions, outcome)))
        await _record(runtime, conn, records)

    await runtime.transaction(work)


async def abandon(runtime: NotificationRuntime, *, delivery_id: str, reason: str) -> None:
    """Fail a delivery without attempting it (its subscription was disabled or deleted meanwhile)."""
    async def work(conn: AsyncConnection) -> None:
        delivery = await runtime.store.load(Delivery, delivery_id, conn)
        await _record(runtime, conn, [(delivery, delivery.abandon(reason=reason, at=now_utc()), None)])

    await runtime.transaction(work)


async def release(runtime: NotificationRuntime, *, delivery_ids: Sequence[str]) -> None:
    """Give leases back, so that those deliveries are due again at once."""
    async def work(conn: AsyncConnection) -> None:
        for delivery_id in delivery_ids:
            await projections.release(conn, delivery_id)

    await runtime.transaction(work)


async def retire_expired_secrets(runtime: NotificationRuntime) -> int:
    """Delete the signing secrets whose rotation overlap is over; return how many."""
    async def work(conn: AsyncConnection) -> int:
        return await runtime.vault.retire_expired(conn, now_utc())

    retired = await runtime.transaction(work)
    if retired:
        log.info("retired webhook signing secrets after their rotation overlap", count=retired)
    return retired


# --------------------------------------------------------------------------- queries

async def _subscription_view(runtime: NotificationRuntime, subscription_id: str) -> dict[str, Any]:
    async with runtime.db.read() as conn:
        view = await projections.get_subscription(conn, subscription_id)
    assert view is not None
    return view


async def list_subscriptions(runtime: NotificationRuntime, *, who: Principal) -> list[dict[str, Any]]:
    """`who`'s subscriptions (commissioners and auditors see all)."""
    async with runtime.db.read() as conn:
        return await projections.list_subscriptions(conn, viewer_of(_owner(who)))


async def get_subscription(runtime: NotificationRuntime, *, who: Principal, subscription_id: str) -> dict[str, Any]:
    """One subscription; another tenant's, or a deleted one, is not found."""
    async with runtime.db.read() as conn:
        view = await projections.get_subscription(conn, subscription_id)
    viewer = viewer_of(_owner(who))
    if view is None or view["status"] == "deleted" or (viewer is not None and view["owner"] != viewer.to_data()):
        raise NotFound(f"No subscription {subscription_id}.")
    return view


async def list_deliveries(runtime: NotificationRuntime, *, who: Principal,
                          filters: DeliveryFilter) -> list[dict[str, Any]]:
    async with runtime.db.read() as conn:
        return await projections.list_deliveries(conn, viewer_of(_owner(who)), filters)


async def get_delivery(runtime: NotificationRuntime, *, who: Principal, delivery_id: str) -> dict[str, Any]:
    """One delivery with its attempts; one `who` may not see is not found."""
    async with runtime.db.read() as conn:
        view = await projections.get_delivery(conn, delivery_id)
    viewer = viewer_of(_owner(who))
    if view is None or (viewer is not None and view["recipient"] != viewer.to_data()):
        raise NotFound(f"No delivery {delivery_id}.")
    return view
