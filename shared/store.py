"""Append-only event store with optimistic concurrency, an outbox and a hash chain.

`append` runs inside the caller's transaction, so a handler can append events, update its read
model and record the processed event id atomically. On PostgreSQL every append first takes one
transaction-scoped advisory lock: commits then happen in position order, so neither the relay
nor a reader following `read_all` can ever pass over an event that commits late, and the global
hash chain has one well-defined predecessor per event.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence, TypeVar

from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared import context, idempotency
from shared.aggregate import Aggregate, NewEvent
from shared.db import Database, sqlite_url
from shared.errors import ConcurrencyError
from shared.events import Envelope, registry
from shared.schema import actors as actors_table
from shared.schema import events as events_table
from shared.schema import outbox as outbox_table

APPEND_LOCK_KEY = 0x706C6D61  # "plma": one advisory lock per database
GENESIS = "0" * 64
_APPENDED = "placematch.appended"
"""`conn.info` key: (transaction, chain hash of its last event) of the connection's last append."""

A = TypeVar("A", bound=Aggregate)


def link_hash(previous: str, body: str) -> str:
    return hashlib.sha256((previous + body).encode()).hexdigest()


class EventStore:
    def __init__(self, db: Database, source: str, *, publish: bool = True) -> None:
        """`publish=False`: appends never fill the outbox (a replay's scratch store publishes nothing)."""
        self.db = db
        self.source = source
        self.publish = publish

    async def append(
        self,
        conn: AsyncConnection,
        stream_id: str,
        expected_version: int | None,
        new_events: Sequence[NewEvent],
        *,
        topic: str | None = None,
        actor: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        created: str | None = None,
    ) -> list[Envelope]:
        """Record `new_events` after version `expected_version` (None = don't check).

        With `topic`, each event is also put in the outbox for the relay to publish.
        `created`: the id of what these events create inside the stream (an offer in a referral),
        which a keyed request's `answer_lost` names instead of the stream.
        Raises ConcurrencyError when the stream moved on.
        """
        return await self.append_many(conn, [(stream_id, expected_version, new_events)], topic=topic, actor=actor,
                                      correlation_id=correlation_id, causation_id=causation_id, created=created)

    async def append_many(
        self,
        conn: AsyncConnection,
        batches: Sequence[tuple[str, int | None, Sequence[NewEvent]]
                          | tuple[str, int | None, Sequence[NewEvent], str | None]],
        *,
        topic: str | None = None,
        actor: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        created: str | None = None,
    ) -> list[Envelope]:
        """`append` to several streams at once — `(stream_id, expected_version, events)` each — in
        a few statements whatever their number (e.g. one notification stream per recipient).

        A batch may name its own topic as a fourth item, `(stream_id, expected_version, events,
        topic)`, None for none; the others go to `topic`. The same stream may appear in several
        batches: each one's expected version counts the events of the batches before it."""
        batches = [b for b in batches if b[2]]
        if not batches:
            return []
        await idempotency.fence(conn)
        # A transaction that appended before holds the lock still, and the chain's head is the hash
        # of its own last event: neither need asking for again (not inside a savepoint, which
        # could be rolled back on its own).
        tx = None if conn.in_nested_transaction() else conn.sync_connection.get_transaction()
        held = conn.info.pop(_APPENDED, None)
        if tx is not None and held is not None and held[0] is tx and tx.is_active:
            chain = held[1]
        else:
            if conn.dialect.name == "postgresql":
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY})")
            chain = None
        heads = await self._heads(conn, list(dict.fromkeys(b[0] for b in batches)))
        if chain is None:
            chain = (await conn.execute(
                select(events_table.c.chain_hash).order_by(events_table.c.position.desc()).limit(1))).scalar() or GENESIS
        envelopes: list[Envelope] = []
        rows: list[dict[str, Any]] = []
        topics: list[str | None] = []
        for batch in batches:
            stream_id, expected_version, new_events = batch[0], batch[1], batch[2]
            batch_topic = batch[3] if len(batch) > 3 else topic  # type: ignore[misc]
            current, stream_prev = heads.get(stream_id, (0, GENESIS))
            if expected_version is not None and current != expected_version:
                raise ConcurrencyError(
                    f"stream {stream_id} is at version {current}, not {expected_version}; reload and retry")
            for new in new_events:
                current += 1
                envelope = Envelope(
                    type=new.type, subject=stream_id, data=new.data, source=self.source, sequence=current,
                    correlationid=correlation_id or context.correlation_id.get(),
                    causationid=causation_id or context.causation_id.get(),
                    actor=actor or context.actor.get(),
                    actorid=context.actor_id.get() if actor is None else None,
                    dataversion=registry.version_of(new.type),
                )
                body = envelope.to_json().decode()
                stream_prev = link_hash(stream_prev, body)
                chain = link_hash(chain, body)
                envelopes.append(envelope)
                rows.append({"event_id": envelope.id, "stream_id": stream_id, "version": current,
                             "type": envelope.type, "time": envelope.time, "body": body,
                             "stream_hash": stream_prev, "chain_hash": chain})
                topics.append(batch_topic)
            heads[stream_id] = (current, stream_prev)
        try:
            positions = (await conn.execute(
                events_table.insert().returning(events_table.c.position, sort_by_parameter_order=True), rows,
            )).scalars().all()
        except IntegrityError as exc:
            raise ConcurrencyError("a stream was appended to concurrently; retry") from exc
        if tx is not None:
            conn.info[_APPENDED] = (tx, chain)
        recorded = [replace(e, position=p) for e, p in zip(envelopes, positions)]
        published = [{"position": e.position, "topic": t, "key": e.subject, "payload": row["body"].encode()}
                     for e, row, t in zip(recorded, rows, topics) if t]
        if published and self.publish:
            await conn.execute(outbox_table.insert(), published)
        await idempotency.record_effect(conn, batches[0][0], created)
        await remember_person(conn, recorded[0].actorid, recorded[0].time)
        return recorded

    async def _heads(self, conn: AsyncConnection, stream_ids: list[str]) -> dict[str, tuple[int, str]]:
        """(version, stream_hash) of the last event of each stream that has any."""
        if len(stream_ids) == 1:
            head = (await conn.execute(
                select(events_table.c.version, events_table.c.stream_hash)
                .where(events_table.c.stream_id == stream_ids[0])
                .order_by(events_table.c.version.desc()).limit(1))).first()
            return {stream_ids[0]: (head.version, head.stream_hash)} if head else {}
        last = (select(events_table.c.stream_id, func.max(events_table.c.version).label("version"))
                .where(events_table.c.stream_id.in_(stream_ids)).group_by(events_table.c.stream_id).subquery())
        rows = (await conn.execute(
            select(events_table.c.stream_id, events_table.c.version, events_table.c.stream_hash).join(
                last, (events_table.c.stream_id == last.c.stream_id) & (events_table.c.version == last.c.version)))).all()
        return {r.stream_id: (r.version, r.stream_hash) for r in rows}

    async def stream_version(self, conn: AsyncConnection, stream_id: str) -> int:
        return (await conn.execute(
            select(func.coalesce(func.max(events_table.c.version), 0)).where(events_table.c.stream_id == stream_id)
        )).scalar_one()

    async def read_stream(self, stream_id: str, conn: AsyncConnection | None = None) -> list[Envelope]:
        query = select(events_table.c.position, events_table.c.body).where(
            events_table.c.stream_id == stream_id).order_by(events_table.c.version)
        if conn is not None:
            rows = (await conn.execute(query)).all()
        else:
            async with self.db.read() as c:
                rows = (await c.execute(query)).all()
        return [Envelope.from_json(r.body, position=r.position) for r in rows]

    async def read_all(self, after: int = 0, limit: int = 1000, conn: AsyncConnection | None = None,
                       types: Collection[str] | None = None) -> list[Envelope]:
        """Events after global position `after`, in position order; only of `types` if given."""
        query = (select(events_table.c.position, events_table.c.body)
                 .where(events_table.c.position > after).order_by(events_table.c.position).limit(limit))
        if types is not None:
            query = query.where(events_table.c.type.in_(list(types)))
        if conn is not None:
            rows = (await conn.execute(query)).all()
        else:
            async with self.db.read() as c:
                rows = (await c.execute(query)).all()
        return [Envelope.from_json(r.body, position=r.position) for r in rows]

    async def iter_all(self, batch: int = 5000, types: Collection[str] | None = None) -> AsyncIterator[Envelope]:
        """Every event (of `types`, if given) in position order, read a batch at a time."""
        after = 0
        while page := await self.read_all(after, batch, types=types):
            for envelope in page:
                yield envelope
            after = page[-1].position or after

    async def load(self, cls: type[A], stream_id: str, conn: AsyncConnection | None = None) -> A:
        """Rebuild an aggregate by folding its stream (version 0 when the stream is empty)."""
        history = await self.read_stream(stream_id, conn)
        return cls.replay(stream_id, ((e.type, e.data) for e in history))

    async def load_many(self, cls: type[A], stream_ids: Collection[str], conn: AsyncConnection) -> dict[str, A]:
        """`load` for several streams in one query: {stream id: aggregate} (version 0 when empty)."""
        ids = list(dict.fromkeys(stream_ids))
        if not ids:
            return {}
        rows = (await conn.execute(
            select(events_table.c.stream_id, events_table.c.body).where(events_table.c.stream_id.in_(ids))
            .order_by(events_table.c.stream_id, events_table.c.version))).all()
        histories: dict[str, list[Envelope]] = {i: [] for i in ids}
        for r in rows:
            histories[r.stream_id].append(Envelope.from_json(r.body))
        return {i: cls.replay(i, ((e.type, e.data) for e in history)) for i, history in histories.items()}

    async def execute(
        self,
        cls: type[A],
        stream_id: str,
        command: Callable[[A], list[NewEvent]],
        *,
        topic: str | None,
        attempts: int = 3,
        after: Callable[[AsyncConnection, A, list[Envelope]], Awaitable[Any]] | None = None,
    ) -> tuple[A, list[Envelope]]:
        """Load, decide, append in one transaction; retry on a concurrent append.

        `after(conn, aggregate, envelopes)` runs in the same transaction (e.g. to update a read
        model). Domain errors from `command` propagate and nothing is recorded.
        """
        for attempt in range(attempts):
            try:
                async with self.db.transaction() as conn:
                    aggregate = await self.load(cls, stream_id, conn)
                    new_events = command(aggregate)
                    envelopes = await self.append(conn, stream_id, aggregate.version, new_events, topic=topic)
                    aggregate.mutate(new_events)
                    if after is not None:
                        await after(conn, aggregate, envelopes)
                return aggregate, envelopes
            except ConcurrencyError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")


async def read_embedded(data_dir: Path, services: Iterable[str],
                        ids: Collection[str] | None = None) -> list[Envelope]:
    """Every event of the embedded stores `<data_dir>/<service>.db` that exist, store by store
    (for the operations tools: replay, audit). With `ids`, only those events are parsed (replay
    needs its inputs, not the large decision records around them)."""
    found: list[Envelope] = []
    for name in services:
        path = data_dir / f"{name}.db"
        if not path.exists():
            continue
        db = Database(sqlite_url(path), inline=True)
        try:
            async with db.read() as conn:
                result = await conn.stream(select(events_table.c.event_id, events_table.c.position, events_table.c.body)
                                           .order_by(events_table.c.position))
                async for row in result:
                    if ids is None or row.event_id in ids:
                        found.append(Envelope.from_json(row.body, position=row.position))
        finally:
            await db.dispose()
    return found


async def remember_person(conn: AsyncConnection, actorid: str | None, when: str) -> None:
    """Keep who `actorid` is (the request's token named them) in the `actors` table, for the audit
    record: names stay in this service's database and never go into an event."""
    person = context.person.get()
    if actorid is None or person is None or getattr(person, "sub", None) != actorid:
        return
    module: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = module.insert(actors_table).values(sub=actorid, actor=person.actor, name=person.name,
                                              username=person.username, first_seen=when, last_seen=when)
    await conn.execute(stmt.on_conflict_do_update(index_elements=["sub"], set_={
        "actor": stmt.excluded.actor, "name": stmt.excluded.name, "username": stmt.excluded.username,
        "last_seen": stmt.excluded.last_seen}))


async def people_of(conn: AsyncConnection, subs: Iterable[str | None]) -> dict[str, dict[str, Any]]:
    """Who these `actorid`s are, as far as this store knows: `{sub: {"actor", "name", "username"}}`."""
    wanted = sorted({s for s in subs if s})
    if not wanted:
        return {}
    rows = await conn.execute(select(actors_table).where(actors_table.c.sub.in_(wanted)))
    return {r.sub: {"actor": r.actor, "name": r.name, "username": r.username} for r in rows}


async def read_embedded_people(data_dir: Path, services: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`people_of` every person the embedded stores `<data_dir>/<service>.db` know (the audit CLI)."""
    found: dict[str, dict[str, Any]] = {}
    for name in services:
        path = data_dir / f"{name}.db"
        if not path.exists():
            continue
        db = Database(sqlite_url(path), inline=True)
        try:
            async with db.read() as conn:
                if not await conn.run_sync(lambda c: sa_inspect(c).has_table("actors")):
                    continue
                rows = await conn.execute(select(actors_table))
                found.update({r.sub: {"actor": r.actor, "name": r.name, "username": r.username} for r in rows})
        finally:
            await db.dispose()
    return found
