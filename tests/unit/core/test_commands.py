"""`run_command` / `in_transaction`: one transaction per command, retried on a conflict, journalled on request."""
from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.aggregate import Aggregate, NewEvent
from shared.commands import in_transaction, run_command
from shared.db import Database
from shared.errors import ConcurrencyError, RuleViolation
from shared.events import Envelope
from shared.migrations import create_core_schema
from shared.schema import outbox, processed_events
from shared.store import EventStore


class Counter(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.total = 0

    def apply(self, type: str, data: dict[str, Any]) -> None:
        if type == "counter-added":
            self.total += data["n"]

    def add(self, n: int) -> list[NewEvent]:
        if n <= 0:
            raise RuleViolation("n must be positive", field="n", rule="positive")
        return [NewEvent("counter-added", {"n": n})]


@pytest.fixture
async def store(tmp_path) -> EventStore:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/c.db")
    await create_core_schema(db)
    yield EventStore(db, "placematch/test")
    await db.dispose()


async def test_command_appends_projects_and_answers_from_the_aggregate(store: EventStore) -> None:
    projected: list[tuple[int, list[str]]] = []

    async def project(_: AsyncConnection, counter: Counter, envelopes: list[Envelope]) -> None:
        projected.append((counter.total, [e.type for e in envelopes]))

    counter, envelopes = await run_command(store.db, store, Counter, "c-1", lambda _c, c: c.add(2),
                                           topic="placematch.test", project=project)
    assert (counter.total, counter.version) == (2, 1)
    assert [e.sequence for e in envelopes] == [1]
    assert projected == [(2, ["counter-added"])]
    async with store.db.read() as conn:
        assert (await conn.execute(select(outbox.c.topic))).scalars().all() == ["placematch.test"]


async def test_a_refused_command_records_nothing_and_projects_nothing(store: EventStore) -> None:
    projected: list[Any] = []

    async def project(*args: Any) -> None:
        projected.append(args)

    with pytest.raises(RuleViolation):
        await run_command(store.db, store, Counter, "c-1", lambda _c, c: c.add(0), topic=None, project=project)
    assert await store.read_stream("c-1") == [] and projected == []


async def test_a_command_deciding_nothing_projects_only_when_asked(store: EventStore) -> None:
    calls: list[int] = []

    async def project(_: AsyncConnection, counter: Counter, envelopes: list[Envelope]) -> None:
        calls.append(len(envelopes))

    await run_command(store.db, store, Counter, "c-1", lambda _c, _a: [], topic=None, project=project)
    assert calls == []
    await run_command(store.db, store, Counter, "c-1", lambda _c, _a: [], topic=None, project=project,
                      project_unchanged=True)
    assert calls == [0]


async def test_a_concurrent_append_makes_the_command_run_again_from_a_fresh_load(store: EventStore) -> None:
    async with store.db.transaction() as conn:  # another writer's event, which the first load does not see
        await store.append(conn, "c-1", 0, [NewEvent("counter-added", {"n": 10})])
    loads: list[int] = []

    class StaleOnce(EventStore):
        async def load(self, cls, stream_id, conn=None):  # type: ignore[no-untyped-def]
            aggregate = await super().load(cls, stream_id, conn)
            loads.append(aggregate.version)
            return cls(stream_id) if len(loads) == 1 else aggregate

    stale = StaleOnce(store.db, "placematch/test")
    counter, envelopes = await run_command(store.db, stale, Counter, "c-1", lambda _c, c: c.add(1), topic=None)
    assert loads == [1, 1]
    assert (counter.total, counter.version) == (11, 2) and [e.sequence for e in envelopes] == [2]


async def test_conflicts_beyond_the_attempts_propagate(store: EventStore) -> None:
    tries = 0

    async def always_conflicting(_: AsyncConnection) -> None:
        nonlocal tries
        tries += 1
        raise ConcurrencyError("stream moved on")

    with pytest.raises(ConcurrencyError):
        await in_transaction(store.db, always_conflicting, attempts=3)
    assert tries == 3


async def test_journal_records_the_commands_event_as_the_next_input(store: EventStore) -> None:
    _, envelopes = await run_command(store.db, store, Counter, "policy", lambda _c, c: c.add(1), topic=None,
                                     journal="test-policy")
    async with store.db.read() as conn:
        rows = (await conn.execute(select(processed_events.c.consumer, processed_events.c.event_id))).all()
    assert [(r.consumer, r.event_id) for r in rows] == [("test-policy", envelopes[0].id)]
