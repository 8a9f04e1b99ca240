"""Consumer runner: hands bus messages to a handler exactly once in effect.

For each event: one transaction records `(consumer, event id)` in `processed_events` and runs
the handler with the same connection, so a redelivered event has no second effect. The bus
offset is committed only after that transaction. A handler that keeps failing is retried with
backoff, then the event goes to `<topic>.dlq` with the error, and the consumer moves on.

With `batch_size` > 1, when a fetch brings several messages (a backlog), up to `batch_size` of
them are first tried in one transaction, in fetch order, each journalled (numbered in the same
order) and handled exactly as alone; then their offsets are committed once. If any of them fails,
the whole transaction rolls back (nothing of the batch is recorded) and each message is handled
alone as above, with its own retries and dead-lettering. Such a transaction holds the journal
lock, and, once a handler appends, the store's append lock, until it commits: API requests that
append wait meanwhile. Matching and notification (whose consumer is their main writer) and referral
(whose handlers only update read models) use 20. Handlers must not call `journal` themselves; a
command that journals its own event takes `lock_journal` before appending (the lock order).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared import context, metrics, tracing
from shared.bus import Bus, Message, Subscription
from shared.db import Database, insert_ignore
from shared.events import Envelope, format_time, now_utc
from shared.schema import processed_events

log = logging.getLogger("placematch.consumer")

JOURNAL_LOCK_KEY = 0x706C6A6E  # "pljn"

Handler = Callable[[AsyncConnection, Envelope], Awaitable[None]]


async def journal(conn: AsyncConnection, consumer: str, event_id: str) -> bool:
    """Record that this service took event `event_id` in, next in its input order.

    False when it was recorded before (a redelivery). Consumers call it for every event; a
    command whose event other decisions depend on (matching's policy change) calls it too, so
    replay can feed every input back in the original order.
    """
    return await _journal_as(conn, consumer, event_id, await _journal_next(conn))


async def lock_journal(conn: AsyncConnection) -> None:
    """Lock the journal until the transaction ends. Consumers take it before the store's append lock;
    a command that journals its own event (matching's policy change) must take it first as well, or
    the two locks taken in opposite orders can deadlock."""
    if conn.dialect.name == "postgresql":  # one journal order even with several consumers
        await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({JOURNAL_LOCK_KEY})")


async def _journal_next(conn: AsyncConnection) -> int:
    """Lock the journal until the transaction ends; the next free sequence number."""
    await lock_journal(conn)
    return (await conn.execute(select(func.coalesce(func.max(processed_events.c.seq), 0) + 1))).scalar_one()


async def _journal_as(conn: AsyncConnection, consumer: str, event_id: str, seq: int) -> bool:
    return await insert_ignore(conn, processed_events, {
        "consumer": consumer, "event_id": event_id, "processed_at": format_time(now_utc()), "seq": seq})


async def input_order(conn: AsyncConnection) -> list[tuple[str, str]]:
    """(consumer, event id) of every input the service took in, in the order it took them (replay)."""
    rows = (await conn.execute(select(processed_events.c.consumer, processed_events.c.event_id)
                               .order_by(processed_events.c.seq, processed_events.c.processed_at))).all()
    return [(r.consumer, r.event_id) for r in rows]


class PoisonEvent(Exception):
    """Raise from a handler for an event that can never succeed: it goes to the DLQ at once."""


R = TypeVar("R")

UNUSABLE_DATA: tuple[type[Exception], ...] = (KeyError, TypeError, ValueError, ArithmeticError)
"""What a reaction raises on malformed event data: it never gets better on retry."""


def _unusable(event: Envelope, error: Exception) -> str:
    return f"{event.type} {event.id}: unusable data ({error!r})"


Reactor = Callable[[R, AsyncConnection, Envelope], Awaitable[None]]


def reactor(reactions: Mapping[str, Reactor[R]], *, poison: tuple[type[Exception], ...] = UNUSABLE_DATA,
            reason: Callable[[Envelope, Any], str] = _unusable) -> Reactor[R]:
    """A service's consumer handler (and replay's) from its `REACTIONS` (event type -> service function):
    the reaction to an event, in the consumer's transaction; other types are ignored. An error of a
    `poison` type goes straight to the dead-letter topic (`PoisonEvent`, with `reason(event, error)`)."""

    async def react(runtime: R, conn: AsyncConnection, event: Envelope) -> None:
        reaction = reactions.get(event.type)
        if reaction is None:
            return
        try:
            await reaction(runtime, conn, event)
        except poison as error:
            raise PoisonEvent(reason(event, error)) from error

    return react


class EventConsumer:
    def __init__(
        self,
        *,
        name: str,
        db: Database,
        bus: Bus,
        topics: Sequence[str],
        handler: Handler,
        max_attempts: int = 4,
        retry_base_seconds: float = 0.2,
        batch_size: int = 1,
        on_commit: Callable[[], None] | None = None,
        service: str = "",
        metrics: metrics.ServiceMetrics | None = None,
    ) -> None:
        """`on_commit`: called after each transaction that handled events commits (e.g. to wake
        whoever acts on what the handler recorded)."""
        self.name = name
        self.db = db
        self.bus = bus
        self.topics = list(topics)
        self.handler = handler
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self.batch_size = batch_size
        self.on_commit = on_commit
        self.service = service or name
        self.metrics = metrics
        self.subscription: Subscription | None = None
        self.handled = 0
        self.dead_lettered = 0
        self.duplicates = 0
        self.ready = asyncio.Event()

    @staticmethod
    @contextlib.contextmanager
    def _caused_by(envelope: Envelope) -> Iterator[None]:
        token_c = context.correlation_id.set(envelope.correlationid or envelope.id)
        token_k = context.causation_id.set(envelope.id)
        token_o = context.origin_time.set(envelope.origintime or envelope.time)
        try:
            yield
        finally:
            context.correlation_id.reset(token_c)
            context.causation_id.reset(token_k)
            context.origin_time.reset(token_o)

    async def _apply(self, conn: AsyncConnection, envelope: Envelope, seq: int) -> bool:
        """Journal the event as number `seq` and handle it; False when it was journalled before."""
        with self._caused_by(envelope), tracing.consuming(self.service, self.name, envelope):
            if not await _journal_as(conn, self.name, envelope.id, seq):
                return False
            await self.handler(conn, envelope)
            return True

    async def process(self, envelope: Envelope) -> bool:
        """Apply one event in one transaction; False when it had been processed before."""
        async with self.db.transaction() as conn:
            applied = await self._apply(conn, envelope, await _journal_next(conn))
        if applied and self.on_commit is not None:
            self.on_commit()
        return applied

    async def process_batch(self, messages: Sequence[Message]) -> bool:
        """Apply several events in one transaction, all or nothing; False (nothing recorded) when
        any of them failed, so that the caller handles each alone."""
        try:
            envelopes = [Envelope.from_kafka(m.value, m.headers or None) for m in messages]
            applied: list[bool] = []
            async with self.db.transaction() as conn:
                seq = await _journal_next(conn)  # the journal stays locked until the commit
                for envelope in envelopes:
                    applied.append(await self._apply(conn, envelope, seq))
                    seq += applied[-1]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("%s: a batch of %d failed (%s); handling each alone", self.name, len(messages),
                     type(exc).__name__)
            return False
        self.handled += sum(applied)
        self.duplicates += len(applied) - sum(applied)
        if any(applied) and self.on_commit is not None:
            self.on_commit()
        return True

    async def handle_messages(self, subscription: Subscription, messages: Sequence[Message]) -> None:
        """Handle and commit a fetched list of messages, in order."""
        for start in range(0, len(messages), max(1, self.batch_size)):
            chunk = messages[start:start + max(1, self.batch_size)]
            started, before = time.perf_counter(), (self.handled, self.duplicates)
            if len(chunk) > 1 and await self.process_batch(chunk):
                # offsets are per partition: commit each one's last message, in fetch order
                last = {(m.topic, m.partition): i for i, m in enumerate(chunk)}
                for i in sorted(last.values()):
                    await subscription.commit(chunk[i])
                self._measure(chunk, started, before)
                continue
            for message in chunk:
                await self.handle_message(message)
                await subscription.commit(message)
            self._measure(chunk, started, before)

    def _measure(self, chunk: Sequence[Message], started: float, before: tuple[int, int]) -> None:
        metrics.consumed(self.metrics, self.name, chunk[0].topic, handled=self.handled - before[0],
                         duplicates=self.duplicates - before[1], seconds=time.perf_counter() - started)

    async def handle_message(self, message: Message) -> None:
        error = ""
        attempts = 0
        for attempt in range(1, self.max_attempts + 1):
            attempts = attempt
            try:
                envelope = Envelope.from_kafka(message.value, message.headers or None)
                if await self.process(envelope):
                    self.handled += 1
                else:
                    self.duplicates += 1
                return
            except asyncio.CancelledError:
                raise
            except PoisonEvent:
                error = traceback.format_exc()
                break
            except Exception:
                error = traceback.format_exc()
                log.warning("%s: attempt %d/%d failed on %s offset %s:\n%s", self.name, attempt,
                            self.max_attempts, message.topic, message.offset, error)
                if attempt < self.max_attempts:
                    await asyncio.sleep(self.retry_base_seconds * 2 ** (attempt - 1))
        await self.bus.publish([Message(
            f"{message.topic}.dlq", message.key, message.value,
            {**message.headers, "placematch-error": error[-2000:].encode(),
             "placematch-consumer": self.name.encode(), "placematch-origin-offset": str(message.offset).encode(),
             "placematch-origin-partition": str(message.partition).encode(),
             "placematch-attempts": str(attempts).encode(), "placematch-failed-at": format_time(now_utc()).encode()},
        )])
        self.dead_lettered += 1
        metrics.dead_lettered(self.metrics, self.name, message.topic)
        log.error("%s: sent %s offset %s to %s.dlq", self.name, message.topic, message.offset, message.topic)

    async def run(self) -> None:
        subscription = self.bus.subscribe(self.name, self.topics)
        while True:
            try:
                await subscription.start()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: cannot subscribe yet (%s); retrying", self.name, exc)
                await asyncio.sleep(1.0)
        self.subscription = subscription
        self.ready.set()
        try:
            while True:
                try:
                    await self.handle_messages(subscription, await subscription.fetch(timeout=1.0))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # commit failed, rebalance, bus away: go back, redeliveries are no-ops
                    log.warning("%s: %s; resuming from the last committed offset", self.name, exc)
                    await asyncio.sleep(0.5)
                    with contextlib.suppress(Exception):
                        await subscription.rewind()
        finally:
            await asyncio.shield(subscription.stop())
