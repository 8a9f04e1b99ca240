"""Append-only event store with optimistic concurrency, an outbox and a hash chain.

`append` runs inside the caller's transaction, so a handler can append events, update its read
model and record the processed event id atomically. On PostgreSQL every append first takes one
transaction-scoped advisory lock: commits then happen in position order, so neither the relay
nor a reader following `read_all` can ever pass over an event that commits late, and the global
hash chain has one well-defined predecessor per event.
"""
from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import bindparam, func, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared import context, eventschema, idempotency
from shared.aggregate import Aggregate, NewEvent
from shared.db import Database, driver_error, sqlite_url
from shared.errors import ConcurrencyError
from shared.events import Envelope, registry
from shared.schema import actors as actors_table
from shared.schema import events as events_table
from shared.schema import outbox as outbox_table

APPEND_LOCK_KEY = 0x706C6D61  # "plma": one advisory lock per database
GENESIS = "0" * 64
_APPENDED = "placematch.appended"
"""`conn.info` key: the transaction of the connection's last append (it holds the append lock)."""

A = TypeVar("A", bound=Aggregate)


def link_hash(previous: str, body: str) -> str:
    return hashlib.sha256((previous + body).encode()).hexdigest()


def _link(previous: str, body: bytes) -> str:
    """`link_hash` of the body's UTF-8 bytes (the same digest, without encoding the body again)."""
    digest = hashlib.sha256(previous.encode())
    digest.update(body)
    return digest.hexdigest()


# The hot path's statements, built once (SQLAlchemy then also compiles each once: its cache key is
# memoised on the statement object) or written for the driver directly.
_EVENT_COLUMNS = ("event_id", "stream_id", "version", "type", "time", "body", "stream_hash", "chain_hash")
_SA_INSERT_EVENTS = events_table.insert().returning(events_table.c.position, sort_by_parameter_order=True)
_SA_INSERT_OUTBOX = outbox_table.insert()
_SA_CHAIN_TAIL = select(events_table.c.chain_hash).order_by(events_table.c.position.desc()).limit(1)
_SA_HEAD = (select(events_table.c.version, events_table.c.stream_hash)
            .where(events_table.c.stream_id == bindparam("stream_id"))
            .order_by(events_table.c.version.desc()).limit(1))
_SA_STREAM = (select(events_table.c.position, events_table.c.body)
              .where(events_table.c.stream_id == bindparam("stream_id")).order_by(events_table.c.version))

_SQLITE_HEAD = "SELECT version, stream_hash FROM events WHERE stream_id = ? ORDER BY version DESC LIMIT 1"
_SQLITE_TAIL = "SELECT position, chain_hash FROM events ORDER BY position DESC LIMIT 1"
_SQLITE_STREAM = "SELECT position, body FROM events WHERE stream_id = ? ORDER BY version"
_SQLITE_INSERT_EVENT = ("INSERT INTO events (position, event_id, stream_id, version, type, time, body, stream_hash, "
                        "chain_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SQLITE_INSERT_OUTBOX = "INSERT INTO outbox (position, topic, key, payload) VALUES (?, ?, ?, ?)"

_PG_LOCK = f"SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY})"
_PG_HEADS = """
(SELECT NULL::varchar AS stream_id, 0 AS version, chain_hash AS hash FROM events ORDER BY position DESC LIMIT 1)
UNION ALL
SELECT s.id, h.version, h.stream_hash FROM unnest($1::varchar[]) AS s(id) CROSS JOIN LATERAL
  (SELECT version, stream_hash FROM events WHERE stream_id = s.id ORDER BY version DESC LIMIT 1) AS h
"""
_PG_INSERT = """
WITH ins AS (
  INSERT INTO events (event_id, stream_id, version, type, "time", body, stream_hash, chain_hash)
  SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::int[], $4::varchar[], $5::varchar[], $6::text[],
                       $7::varchar[], $8::varchar[])
  RETURNING position, event_id
), box AS (
  INSERT INTO outbox (position, topic, key, payload)
  SELECT ins.position, o.topic, o.key, o.payload
  FROM unnest($9::varchar[], $10::varchar[], $11::varchar[], $12::bytea[]) AS o(event_id, topic, key, payload)
  JOIN ins USING (event_id)
)
SELECT position, event_id FROM ins
"""
"""Events and their outbox rows in one statement (one round trip) on PostgreSQL."""


def _sqlite_heads(raw: sqlite3.Connection, stream_ids: list[str]) -> tuple[dict[str, tuple[int, str]], str, int]:
    """Heads of `stream_ids`, the chain tail and the last position, on the SQLite writer."""
    heads: dict[str, tuple[int, str]] = {}
    try:
        for stream_id in stream_ids:
            head = raw.execute(_SQLITE_HEAD, (stream_id,)).fetchone()
            if head is not None:
                heads[stream_id] = head
        tail = raw.execute(_SQLITE_TAIL).fetchone()
    except sqlite3.Error as exc:
        raise driver_error(_SQLITE_HEAD, exc) from exc
    return heads, tail[1] if tail else GENESIS, tail[0] if tail else 0


async def _asyncpg_of(conn: AsyncConnection) -> Any | None:
    """The asyncpg connection under `conn`, its transaction begun (SQLAlchemy's adapter begins
    lazily, at the first statement); None where the adapter is not the one this is written for."""
    adapted: Any = (await conn.get_raw_connection()).dbapi_connection
    driver = getattr(adapted, "_connection", None)
    if not isinstance(driver, asyncpg.Connection) or not hasattr(adapted, "_start_transaction"):
        return None
    if getattr(adapted, "_transaction", None) is None:
        async with adapted._execute_mutex:
            if adapted._transaction is None:
                await adapted._start_transaction()
    return driver


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
        raw = self.db.sqlite_writer(conn)
        last = 0
        if raw is not None:
            heads, chain, last = _sqlite_heads(raw, list(dict.fromkeys(b[0] for b in batches)))
        elif conn.dialect.name == "postgresql" and (driver := await _asyncpg_of(conn)) is not None:
            try:
                heads, chain = await self._pg_heads(conn, driver, list(dict.fromkeys(b[0] for b in batches)))
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                raise driver_error(_PG_HEADS, exc) from exc
        else:
            driver = None
            heads, chain = await self._sa_heads(conn, list(dict.fromkeys(b[0] for b in batches)))
        envelopes, rows, topics = self._envelopes(batches, heads, chain, topic=topic, actor=actor,
                                                  correlation_id=correlation_id, causation_id=causation_id,
                                                  first_position=last + 1 if raw is not None else None)
        publish = self.publish
        if raw is not None:
            # BEGIN IMMEDIATE: nobody else writes until this transaction ends, so the positions
            # are the next ones after the last (events are never deleted)
            positions: Sequence[int] = range(last + 1, last + 1 + len(rows))
            try:
                raw.executemany(_SQLITE_INSERT_EVENT, [(p, *r) for p, r in zip(positions, rows, strict=True)])
                if publish and any(topics):
                    raw.executemany(_SQLITE_INSERT_OUTBOX, [
                        (p, t, r[1], r[5].encode()) for p, r, t in zip(positions, rows, topics, strict=True) if t])
            except sqlite3.IntegrityError as exc:
                raise ConcurrencyError("a stream was appended to concurrently; retry") from exc
            except sqlite3.Error as exc:
                raise driver_error(_SQLITE_INSERT_EVENT, exc) from exc
        elif driver is not None:
            out = [(r[0], t, r[1], r[5].encode()) for r, t in zip(rows, topics, strict=True) if t] if publish else []
            try:
                columns = [*zip(*rows, strict=True), *(zip(*out, strict=True) if out else ([], [], [], []))]
                got = await driver.fetch(_PG_INSERT, *columns)
            except asyncpg.UniqueViolationError as exc:
                raise ConcurrencyError("a stream was appended to concurrently; retry") from exc
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                raise driver_error(_PG_INSERT, exc) from exc
            position_of = {r["event_id"]: r["position"] for r in got}
            positions = [position_of[r[0]] for r in rows]
        else:
            try:
                values = [dict(zip(_EVENT_COLUMNS, r, strict=True)) for r in rows]
                positions = (await conn.execute(_SA_INSERT_EVENTS, values)).scalars().all()
            except IntegrityError as exc:
                raise ConcurrencyError("a stream was appended to concurrently; retry") from exc
            published = [{"position": p, "topic": t, "key": r[1], "payload": r[5].encode()}
                         for p, r, t in zip(positions, rows, topics, strict=True) if t]
            if published and publish:
                await conn.execute(_SA_INSERT_OUTBOX, published)
        recorded = envelopes if raw is not None else [
            replace(e, position=p) for e, p in zip(envelopes, positions, strict=True)]
        await idempotency.record_effect(conn, batches[0][0], created)
        await remember_person(conn, recorded[0].actorid, recorded[0].time)
        return recorded

    def _envelopes(
        self,
        batches: Sequence[tuple[str, int | None, Sequence[NewEvent]]
                          | tuple[str, int | None, Sequence[NewEvent], str | None]],
        heads: dict[str, tuple[int, str]],
        chain: str,
        *,
        topic: str | None,
        actor: str | None,
        correlation_id: str | None,
        causation_id: str | None,
        first_position: int | None = None,
    ) -> tuple[list[Envelope], list[tuple[str, str, int, str, str, str, str, str]], list[str | None]]:
        """The envelopes of `batches` after `heads` and the chain tail `chain`, with their rows
        (`_EVENT_COLUMNS`) and topics; ConcurrencyError when a stream is not at its expected version.
        With `first_position`, the envelopes carry their positions from it on."""
        envelopes: list[Envelope] = []
        rows: list[tuple[str, str, int, str, str, str, str, str]] = []
        topics: list[str | None] = []
        correlation_id = correlation_id or context.correlation_id.get()
        causation_id = causation_id or context.causation_id.get()
        actor_id = context.actor_id.get() if actor is None else None  # the person behind the request's actor
        actor = actor or context.actor.get()
        for batch in batches:
            stream_id, expected_version, new_events = batch[0], batch[1], batch[2]
            batch_topic = batch[3] if len(batch) > 3 else topic
            current, stream_prev = heads.get(stream_id, (0, GENESIS))
            if expected_version is not None and current != expected_version:
                raise ConcurrencyError(
                    f"stream {stream_id} is at version {current}, not {expected_version}; reload and retry")
            for new in new_events:
                current += 1
                envelope = Envelope(
                    type=new.type, subject=stream_id, data=new.data, source=self.source, sequence=current,
                    correlationid=correlation_id, causationid=causation_id, actor=actor, actorid=actor_id,
                    dataversion=registry.version_of(new.type),
                    dataschema=eventschema.dataschema_of(new.type, registry.version_of(new.type)),
                    position=None if first_position is None else first_position + len(rows),
                )
                encoded = envelope.to_json()
                body = encoded.decode()
                stream_prev = _link(stream_prev, encoded)
                chain = _link(chain, encoded)
                envelopes.append(envelope)
                rows.append((envelope.id, stream_id, current, envelope.type, envelope.time, body, stream_prev, chain))
                topics.append(batch_topic)
            heads[stream_id] = (current, stream_prev)
        return envelopes, rows, topics

    @staticmethod
    def _held(conn: AsyncConnection) -> bool:
        """Whether this transaction took the append lock already (PostgreSQL), marking it taken.
        Not inside a savepoint, which could be rolled back on its own, lock and all."""
        tx = None if conn.in_nested_transaction() else conn.sync_connection.get_transaction()  # type: ignore[union-attr]
        held = conn.info.get(_APPENDED)
        if tx is not None and held is tx and tx.is_active:  # type: ignore[union-attr]
            return True
        if tx is not None:
            conn.info[_APPENDED] = tx
        return False

    async def _pg_heads(self, conn: AsyncConnection, driver: Any,
                        stream_ids: list[str]) -> tuple[dict[str, tuple[int, str]], str]:
        """Append lock (once per transaction), then heads and chain tail in one round trip."""
        if not self._held(conn):
            await driver.execute(_PG_LOCK)
        heads: dict[str, tuple[int, str]] = {}
        chain = GENESIS
        for r in await driver.fetch(_PG_HEADS, stream_ids):
            if r["stream_id"] is None:
                chain = r["hash"]
            else:
                heads[r["stream_id"]] = (r["version"], r["hash"])
        return heads, chain

    async def _sa_heads(self, conn: AsyncConnection,
                        stream_ids: list[str]) -> tuple[dict[str, tuple[int, str]], str]:
        """Heads and chain tail through SQLAlchemy (a connection other than the SQLite writer)."""
        if conn.dialect.name == "postgresql" and not self._held(conn):
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY})")
        heads = await self._heads(conn, stream_ids)
        chain = (await conn.execute(_SA_CHAIN_TAIL)).scalar() or GENESIS
        return heads, chain

    async def _heads(self, conn: AsyncConnection, stream_ids: list[str]) -> dict[str, tuple[int, str]]:
        """(version, stream_hash) of the last event of each stream that has any."""
        raw = self.db.sqlite_writer(conn)
        if raw is not None:
            return _sqlite_heads(raw, stream_ids)[0]
        if len(stream_ids) == 1:
            head = (await conn.execute(_SA_HEAD, {"stream_id": stream_ids[0]})).first()
            return {stream_ids[0]: (head.version, head.stream_hash)} if head else {}
        last = (select(events_table.c.stream_id, func.max(events_table.c.version).label("version"))
                .where(events_table.c.stream_id.in_(stream_ids)).group_by(events_table.c.stream_id).subquery())
        rows = (await conn.execute(
            select(events_table.c.stream_id, events_table.c.version, events_table.c.stream_hash).join(
                last,
                (events_table.c.stream_id == last.c.stream_id) & (events_table.c.version == last.c.version)))).all()
        return {r.stream_id: (r.version, r.stream_hash) for r in rows}

    async def stream_version(self, conn: AsyncConnection, stream_id: str) -> int:
        return (await conn.execute(
            select(func.coalesce(func.max(events_table.c.version), 0)).where(events_table.c.stream_id == stream_id)
        )).scalar_one()

    async def read_stream(self, stream_id: str, conn: AsyncConnection | None = None) -> list[Envelope]:
        if conn is not None and (raw := self.db.sqlite_writer(conn)) is not None:
            try:
                found: Iterable[tuple[int, str]] = raw.execute(_SQLITE_STREAM, (stream_id,)).fetchall()
            except sqlite3.Error as exc:
                raise driver_error(_SQLITE_STREAM, exc) from exc
        elif conn is not None:
            found = (await conn.execute(_SA_STREAM, {"stream_id": stream_id})).all()
        else:
            async with self.db.read() as c:
                found = (await c.execute(_SA_STREAM, {"stream_id": stream_id})).all()
        return [Envelope.from_json(body, position=position) for position, body in found]

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
