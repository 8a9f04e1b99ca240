"""The one way a command runs: load, decide, append, project — in one transaction, retried on a conflict.

Every service's `service.py` runs its commands through `ServiceRuntime.command` (one stream) or
`ServiceRuntime.transaction` (a command that reads or writes several streams itself). Lock order
and journalling are parameters here, never code in a route: a command whose event later decisions
depend on (matching's policy change) passes `journal=NAME`, and the journal lock is then taken
before anything else, in the order consumers take it (journal lock, then the store's append lock),
so the two can never deadlock.
"""
from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from shared import preconditions
from shared.aggregate import Aggregate, NewEvent
from shared.consumers import journal as journal_input
from shared.consumers import lock_journal as take_journal_lock
from shared.db import Database
from shared.errors import ConcurrencyError
from shared.events import Envelope
from shared.store import EventStore

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")

Decide = Callable[[AsyncConnection, A], Awaitable[list[NewEvent]] | list[NewEvent]]
"""What a command decides: the events to record, from the loaded aggregate (and read models via the connection)."""
Project = Callable[[AsyncConnection, A, list[Envelope]], Awaitable[Any]]
"""Updates read models in the command's transaction, after the events are appended."""

ATTEMPTS = 3


async def in_transaction(db: Database, work: Callable[[AsyncConnection], Awaitable[T]], *,
                         lock_journal: bool = False, attempts: int = ATTEMPTS) -> T:
    """Run `work(conn)` in one transaction; run it again from the start on a `ConcurrencyError`
    (another writer appended to a stream first). `lock_journal` takes the journal lock first."""
    for attempt in range(attempts):
        try:
            async with db.transaction() as conn:
                if lock_journal:
                    await take_journal_lock(conn)
                return await work(conn)
        except ConcurrencyError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def run_command(db: Database, store: EventStore, cls: type[A], stream_id: str, decide: Decide[A], *,
                      topic: str | None, project: Project[A] | None = None, journal: str | None = None,
                      project_unchanged: bool = False, created: str | None = None,
                      attempts: int = ATTEMPTS, expected_version: int | None = None) -> tuple[A, list[Envelope]]:
    """Load `cls` `stream_id` (version 0 if new), decide, append with the expected version (to the
    outbox for `topic`), fold the events into the aggregate and `project` — all in one transaction.

    Domain errors from `decide` propagate and nothing is recorded. `journal=NAME` records the first
    new event as the next input of this service under NAME (replay feeds it back in that order).
    `project` runs only when events were recorded, unless `project_unchanged`.
    `created`: the id of what the events create inside the stream (an offer in a referral), which a
    keyed request's `answer_lost` names instead of the stream (see `EventStore.append`).
    Returns the aggregate as changed, so the caller answers from it (no read-back of a view).
    `expected_version` (else the request's `If-Match`, shared.preconditions): the version the
    aggregate must be at when loaded in the transaction, or 412 and nothing recorded.
    """
    expected = expected_version if expected_version is not None else preconditions.take_expected()

    async def work(conn: AsyncConnection) -> tuple[A, list[Envelope]]:
        aggregate = await store.load(cls, stream_id, conn)
        preconditions.check(expected, preconditions.etag_of(aggregate), stream_id)
        decided = decide(conn, aggregate)
        events = await decided if inspect.isawaitable(decided) else decided
        envelopes = await store.append(conn, stream_id, aggregate.version, events, topic=topic, created=created)
        aggregate.mutate(events)
        preconditions.record_version(preconditions.etag_of(aggregate))
        if journal is not None and envelopes:
            await journal_input(conn, journal, envelopes[0].id)
        if project is not None and (envelopes or project_unchanged):
            await project(conn, aggregate, envelopes)
        return aggregate, envelopes

    return await in_transaction(db, work, lock_journal=journal is not None, attempts=attempts)
