"""The stored-retry dispatcher: the delivery loop, attempting due deliveries.

Nothing waits in memory: a delivery's next attempt is a row (`deliveries.next_attempt_at`) derived
from its events, so a restart simply picks up whatever is due. A short lease on the row keeps two
dispatchers (or two passes) from attempting the same delivery at once; an expired lease (a crash
mid-attempt) makes it due again, which is why receivers de-duplicate on `webhook-id`. Each step
that records something (claim, settle, abandon, release) is a function of `service.py`, in a
transaction of its own; this module only sends.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence

import httpx

from shared.logs import get_logger
from shared.tracing import httpx_request_hook

from . import service, telemetry
from .emails import SmtpConfig, message_for, send_email
from .retries import AttemptOutcome
from .service import NotificationRuntime
from .subscriptions import SubscriptionStatus
from .webhooks import send_webhook

log = get_logger("placematch.notification.dispatcher")

SETTLE_BATCH = 100
"""Most attempts' outcomes recorded in one transaction by `Dispatcher.settle_many`."""


class Dispatcher:
    def __init__(self, runtime: NotificationRuntime) -> None:
        self.runtime = runtime
        self.settings = runtime.config
        self.smtp = SmtpConfig.from_settings(runtime.config)
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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.delivery_poll_seconds)
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
        return await service.claim_due(self.runtime, limit=limit)

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
        due = await service.due_attempt(self.runtime, delivery_id=delivery_id)
        if due is None:
            return
        delivery, subscription = due.delivery, due.subscription
        if subscription is not None:
            if subscription.status is not SubscriptionStatus.ACTIVE:
                await service.abandon(self.runtime, delivery_id=delivery_id,
                                      reason=f"subscription_{subscription.status.value}")
                return
            assert self._client is not None
            with telemetry.attempt_span(delivery, due.origin):
                outcome = await send_webhook(
                    self._client, url=subscription.url, body=delivery.body, message_id=delivery.message_id,
                    secrets=due.secrets, allow_private=self.settings.webhook_allow_private,
                    timeout_seconds=self.settings.webhook_timeout_seconds,
                )
        else:
            with telemetry.attempt_span(delivery, due.origin):
                outcome = await send_email(message_for(delivery, sender=self.smtp.sender), self.smtp)
        telemetry.attempted(delivery, outcome, due.origin)
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

    async def settle(self, delivery_id: str, outcome: AttemptOutcome) -> None:
        await service.settle(self.runtime, delivery_id=delivery_id, outcome=outcome,
                             jitter_sample=self._random.random())

    async def settle_many(self, items: Sequence[tuple[str, AttemptOutcome]]) -> None:
        """`settle` for several attempts in one transaction and one append. When that fails (e.g.
        a delivery or subscription changed meanwhile), each is settled alone, as `settle` does; an
        outcome that cannot be recorded is logged, and the attempt is made again when its lease
        expires."""
        ids = [d for d, _ in items]
        if len(items) > 1 and len(set(ids)) == len(ids):
            try:
                await service.settle_many(self.runtime, outcomes=items, jitter=self._random.random)
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
        await service.release(self.runtime, delivery_ids=delivery_ids)
