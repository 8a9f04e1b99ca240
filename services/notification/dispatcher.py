"""The stored-retry dispatcher: attempts due deliveries and records what happened.

Nothing waits in memory: a delivery's next attempt is a row (`deliveries.next_attempt_at`) derived
from its events, so a restart simply picks up whatever is due. A short lease on the row keeps two
dispatchers (or two passes) from attempting the same delivery at once; an expired lease (a crash
mid-attempt) makes it due again, which is why receivers de-duplicate on `webhook-id`.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.aggregate import NewEvent
from shared.errors import ConcurrencyError
from shared.events import format_time
from shared.logs import get_logger
from shared.store import EventStore
from shared.tracing import httpx_request_hook

from . import projections, telemetry
from .config import NotificationSettings
from .domain import (
    SUBSCRIPTION_DISABLED,
    AttemptOutcome,
    AttemptResult,
    Channel,
    Delivery,
    DeliveryStatus,
    NotificationRequest,
    PlannedDelivery,
    Subscription,
    SubscriptionStatus,
    delivery_recorded,
)
from .emails import SmtpConfig, build_message, render_endpoint_disabled, render_notification, send_email
from .vault import SecretVault
from .webhooks import send_webhook

log = get_logger("placematch.notification.dispatcher")

DELIVERY_NAMESPACE = uuid.UUID("5b0f7a8e-3c1d-4b7e-9a51-8f2d6c0e4a13")
SETTLE_BATCH = 100
"""Most attempts' outcomes recorded in one transaction by `Dispatcher.settle_many`."""


def delivery_id_for(notification_id: str, planned: PlannedDelivery) -> str:
    """Deterministic, so a request handled twice schedules the same deliveries."""
    target = planned.subscription_id or f"email:{planned.target.lower()}"
    return str(uuid.uuid5(DELIVERY_NAMESPACE, f"{notification_id}/{target}"))


class Deliveries:
    """Recording decisions about deliveries: schedule, settle, and everything that follows."""

    def __init__(self, store: EventStore, settings: NotificationSettings, *, audit_topic: str, dlq_topic: str) -> None:
        self.store = store
        self.settings = settings
        self.audit_topic = audit_topic
        self.dlq_topic = dlq_topic

    async def schedule(
        self, conn: AsyncConnection, request: NotificationRequest, planned: PlannedDelivery, at: datetime
    ) -> str | None:
        delivery_id = delivery_id_for(request.notification_id, planned)
        if await self.store.stream_version(conn, delivery_id):
            return None
        events = Delivery.schedule(delivery_id, request=request, planned=planned, at=at)
        await projections.project(conn, await self.store.append(conn, delivery_id, 0, events))
        return delivery_id

    async def record(
        self, conn: AsyncConnection, delivery: Delivery, events: list[NewEvent], *,
        endpoint: tuple[Subscription, bool, datetime] | None = None,
    ) -> None:
        """Append a delivery's new events; a settling one also goes to the audit trail, and a
        failure to `placematch.notifications.dlq`. With `endpoint` — the delivery's subscription
        (loaded in this transaction), whether the attempt succeeded, and when — the endpoint's
        health events too (`Subscription.record_delivery_outcome`).

        Everything goes in one `append_many`, in the order one append each would give (delivery
        events, audit record, endpoint events): the global append lock is held for a few
        statements, not three or four appends' worth."""
        await self.record_many(conn, [(delivery, events, endpoint)])

    async def record_many(
        self, conn: AsyncConnection,
        items: Sequence[tuple[Delivery, list[NewEvent], tuple[Subscription, bool, datetime] | None]],
    ) -> None:
        """`record` for several deliveries, in order, in one `append_many`: the same events, in
        the same order, as `record` called for each in turn. Deliveries of one subscription must
        share its `Subscription` object (each sees the health events of those before it)."""
        batches: list[tuple[str, int | None, list[NewEvent], str | None]] = []
        settled: list[tuple[Delivery, NewEvent]] = []
        disabled: list[tuple[Subscription, NewEvent, datetime]] = []
        for delivery, events, endpoint in items:
            version = delivery.version
            first = len(batches)
            for event in events:
                topic = self.dlq_topic if event.type == "delivery-failed" else None
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
                                    self.audit_topic))
                    settled.append((delivery, event))
            if endpoint is not None and endpoint[0].owner is not None:
                subscription, succeeded, attempted_at = endpoint
                health = subscription.record_delivery_outcome(
                    succeeded=succeeded, at=attempted_at, policy=self.settings.disable_policy())
                if health:
                    batches.append((subscription.id, subscription.version, health, None))
                    subscription.mutate(health)
                    disabled += [(subscription, e, attempted_at) for e in health if e.type == "subscription-disabled"]
        await projections.project(conn, await self.store.append_many(conn, batches))
        for delivery, event in settled:
            log.info("delivery settled", delivery_id=delivery.id, channel=delivery.channel.value,
                     status=event.type, attempts=event.data["attempts"])
            telemetry.settled(delivery, event.type)
        for subscription, event, at in disabled:
            telemetry.disabled()
            await self.tell_owner_disabled(conn, subscription, event, at)

    async def tell_owner_disabled(
        self, conn: AsyncConnection, subscription: Subscription, disabled: NewEvent, at: datetime
    ) -> None:
        assert subscription.owner is not None
        email = subscription.contact_email or await projections.email_of(conn, subscription.owner)
        if not email or not self.settings.email_enabled:
            log.warning("endpoint disabled; no address to tell its owner", subscription_id=subscription.id)
            return
        request = NotificationRequest(
            notification_id=f"disabled-{subscription.id}-{disabled.data['disabled_at']}",
            webhook_type=SUBSCRIPTION_DISABLED,
            recipient=subscription.owner,
            email=email,
            referral_id=None,
            data={"subscription_id": subscription.id, "url": subscription.url,
                  "failing_since": disabled.data.get("failing_since"), "disabled_at": disabled.data["disabled_at"]},
        )
        await self.schedule(conn, request, PlannedDelivery(Channel.EMAIL, email), at)


class Dispatcher:
    def __init__(self, runtime: Any, settings: NotificationSettings, deliveries: Deliveries,
                 vault: SecretVault) -> None:
        self.runtime = runtime
        self.vault = vault
        self.settings = settings
        self.deliveries = deliveries
        self.policy = settings.retry_policy()
        self.smtp = SmtpConfig.from_settings(settings)
        self._wake = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        self._random = random.Random()
        self._settling: asyncio.Queue[tuple[str, AttemptOutcome]] | None = None
        self._settling_now: list[tuple[str, AttemptOutcome]] = []

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Keep up to `delivery_concurrency` attempts in flight: whenever one ends (or a new
        delivery is scheduled, or every `delivery_poll_seconds`), claim more that are due. No
        attempt waits for a slower one before the next is claimed.

        An attempt hands its outcome to one settling task and frees its slot; that task records
        every outcome waiting in one transaction (`settle_many`), so the store's append lock is
        taken once per batch of outcomes rather than once per attempt. The hand-over queue is
        short (a full one holds attempts back); the lease of a delivery is only released by its
        recorded outcome, so an outcome lost in a crash means the attempt is made again once the
        lease expires — as with a crash during the attempt itself."""
        self._client = httpx.AsyncClient(follow_redirects=False, event_hooks={"request": [httpx_request_hook]})
        running: set[asyncio.Task[None]] = set()
        concurrency = max(1, self.settings.delivery_concurrency)
        self._settling = asyncio.Queue(maxsize=4 * concurrency)
        settler = asyncio.create_task(self._settle_queued())

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            self._wake.set()

        try:
            while True:
                self._wake.clear()
                free = concurrency - len(running)
                if free > 0:
                    try:
                        claimed = await self.claim_due(free)
                    except Exception:  # noqa: BLE001 - the attempts in flight go on; claim again later
                        log.exception("could not claim due deliveries; trying again shortly")
                        claimed = []
                    for delivery_id in claimed:
                        task = asyncio.create_task(self._attempt_safely(delivery_id))
                        running.add(task)
                        task.add_done_callback(finished)
                    if len(claimed) == free:
                        continue  # there may be more due: claim again once a slot frees
                try:
                    await asyncio.wait_for(self._wake.wait(), self.settings.delivery_poll_seconds)
                except asyncio.TimeoutError:
                    pass
        finally:
            for task in (*running, settler):
                task.cancel()  # an attempt cancelled mid-way gives its lease back (_attempt_safely)
            await asyncio.gather(*running, settler, return_exceptions=True)
            # outcomes not recorded: give their leases back so that the next start retries at once
            unsettled = [d for d, _ in self._settling_now]
            while not self._settling.empty():
                unsettled.append(self._settling.get_nowait()[0])
            self._settling, self._settling_now = None, []
            if unsettled:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._release(*unsettled))
            await self._client.aclose()
            self._client = None

    async def claim_due(self, limit: int) -> list[str]:
        """Take the lease on up to `limit` deliveries due now; return their ids."""
        now = datetime.now(timezone.utc)
        lease = now + timedelta(seconds=self.settings.webhook_timeout_seconds + 30)
        async with self.runtime.db.transaction() as conn:
            return await projections.claim_due(conn, format_time(now), format_time(lease), limit)

    async def run_due(self) -> int:
        """Attempt up to `delivery_concurrency` deliveries due now and wait for them; return how
        many were attempted (a one-off pass, e.g. for tests; `run` keeps a pool busy instead)."""
        claimed = await self.claim_due(self.settings.delivery_concurrency)
        await asyncio.gather(*(self._attempt_safely(d) for d in claimed))
        return len(claimed)

    async def _attempt_safely(self, delivery_id: str) -> None:
        try:
            await self.attempt(delivery_id)
        except asyncio.CancelledError:
            # Shutting down mid-attempt: give the lease back so the next start retries at once
            # (the receiver may see this webhook-id twice, which the spec tells it to expect).
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(delivery_id))
            raise
        except Exception:
            log.exception("delivery attempt crashed; it will be retried when its lease expires",
                          delivery_id=delivery_id)

    async def attempt(self, delivery_id: str) -> None:
        store = self.runtime.store
        subscription: Subscription | None = None
        signing: list[str] = []
        now = datetime.now(timezone.utc)
        async with self.runtime.db.read() as conn:  # one connection for every read
            delivery = await store.load(Delivery, delivery_id, conn)
            if delivery.status is not DeliveryStatus.PENDING:
                return
            origin = await telemetry.origin_of(conn, delivery_id)
            if delivery.channel is Channel.WEBHOOK:
                assert delivery.subscription_id is not None
                subscription = await store.load(Subscription, delivery.subscription_id, conn)
                if subscription.status is SubscriptionStatus.ACTIVE:
                    signing = await self.vault.signing_secrets(conn, subscription, now)
        if delivery.channel is Channel.WEBHOOK:
            assert subscription is not None
            if subscription.status is not SubscriptionStatus.ACTIVE:
                await self._abandon(delivery_id, f"subscription_{subscription.status.value}")
                return
            assert self._client is not None
            with telemetry.attempt_span(delivery, origin):
                outcome = await send_webhook(
                    self._client, url=subscription.url, body=delivery.body, message_id=delivery.message_id,
                    secrets=signing, allow_private=self.settings.webhook_allow_private,
                    timeout_seconds=self.settings.webhook_timeout_seconds,
                )
        else:
            with telemetry.attempt_span(delivery, origin):
                outcome = await send_email(self._message_for(delivery), self.smtp)
        telemetry.attempted(delivery, outcome, origin)
        if self._settling is not None:
            await self._settling.put((delivery_id, outcome))  # recorded by _settle_queued
        else:
            await self.settle(delivery_id, outcome)

    async def _settle_queued(self) -> None:
        assert self._settling is not None
        queue = self._settling
        while True:
            batch = [await queue.get()]
            while len(batch) < SETTLE_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            self._settling_now = batch
            await self.settle_many(batch)
            self._settling_now = []

    def _message_for(self, delivery: Delivery) -> Any:
        if delivery.webhook_type == SUBSCRIPTION_DISABLED:
            rendered = render_endpoint_disabled(
                subscription_id=delivery.data["subscription_id"], url=delivery.data["url"],
                failing_since=delivery.data.get("failing_since"), disabled_at=delivery.data["disabled_at"])
        else:
            rendered = render_notification(
                webhook_type=delivery.webhook_type, notification_id=delivery.notification_id,
                referral_id=delivery.referral_id, data=delivery.data)
        return build_message(rendered, sender=self.smtp.sender, to=delivery.target, message_key=delivery.message_id)

    async def settle(self, delivery_id: str, outcome: AttemptOutcome) -> None:
        for attempt in range(3):
            try:
                async with self.runtime.db.transaction() as conn:
                    delivery = await self.runtime.store.load(Delivery, delivery_id, conn)
                    if delivery.status is not DeliveryStatus.PENDING:
                        return
                    endpoint = None
                    if delivery.channel is Channel.WEBHOOK and delivery.subscription_id:
                        # read before appending: the append lock is then held only for the writes
                        subscription = await self.runtime.store.load(Subscription, delivery.subscription_id, conn)
                        endpoint = (subscription, outcome.result is AttemptResult.SUCCEEDED, outcome.attempted_at)
                    events = delivery.record_attempt(outcome, policy=self.policy, jitter_sample=self._random.random())
                    await self.deliveries.record(conn, delivery, events, endpoint=endpoint)
                return
            except ConcurrencyError:
                if attempt == 2:
                    raise

    async def settle_many(self, items: Sequence[tuple[str, AttemptOutcome]]) -> None:
        """`settle` for several attempts in one transaction and one append. When that fails (e.g.
        a delivery or subscription changed meanwhile), each is settled alone, as `settle` does; an
        outcome that cannot be recorded is logged, and the attempt is made again when its lease
        expires."""
        ids = [d for d, _ in items]
        if len(items) > 1 and len(set(ids)) == len(ids):
            try:
                async with self.runtime.db.transaction() as conn:
                    store = self.runtime.store
                    deliveries = await store.load_many(Delivery, ids, conn)
                    subscriptions = await store.load_many(Subscription, [
                        d.subscription_id for d in deliveries.values()
                        if d.channel is Channel.WEBHOOK and d.subscription_id], conn)
                    records = []
                    for delivery_id, outcome in items:
                        delivery = deliveries[delivery_id]
                        if delivery.status is not DeliveryStatus.PENDING:
                            continue
                        endpoint = None
                        if delivery.channel is Channel.WEBHOOK and delivery.subscription_id:
                            endpoint = (subscriptions[delivery.subscription_id],
                                        outcome.result is AttemptResult.SUCCEEDED, outcome.attempted_at)
                        events = delivery.record_attempt(outcome, policy=self.policy,
                                                         jitter_sample=self._random.random())
                        records.append((delivery, events, endpoint))
                    await self.deliveries.record_many(conn, records)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("recording attempts together failed; recording each alone", attempts=len(items),
                         error=type(exc).__name__)
        for delivery_id, outcome in items:
            try:
                await self.settle(delivery_id, outcome)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not record a delivery attempt; it will be retried when its lease expires",
                              delivery_id=delivery_id)

    async def _release(self, *delivery_ids: str) -> None:
        async with self.runtime.db.transaction() as conn:
            for delivery_id in delivery_ids:
                await projections.release(conn, delivery_id)

    async def _abandon(self, delivery_id: str, reason: str) -> None:
        async with self.runtime.db.transaction() as conn:
            delivery = await self.runtime.store.load(Delivery, delivery_id, conn)
            events = delivery.abandon(reason=reason, at=datetime.now(timezone.utc))
            await self.deliveries.record(conn, delivery, events)
