"""Database access shared by stores, projections and consumers: one async engine per service."""
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import aiosqlite
import sqlalchemy.exc
from sqlalchemy import Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def sqlite_url(path: Path | str) -> str:
    """Async SQLAlchemy URL of a SQLite file (the embedded stores, `<data-dir>/<service>.db`)."""
    return f"sqlite+aiosqlite:///{Path(path).as_posix()}"


class Database:
    """An async engine plus a `committed` signal that wakes the outbox relay.

    SQLite allows one writer at a time; write transactions in this process are serialised with a
    lock so that none fails with "database is locked". They all run on one writer connection that
    stays open, made on the event loop's thread (no worker-thread hand-over per statement: a
    statement there takes microseconds) and starting each transaction with `BEGIN IMMEDIATE`, so
    the transaction holds SQLite's write lock from its first statement (the store reads stream
    heads and the chain tail knowing nobody can write before it commits). Waiting for another
    process's write lock never blocks the loop: `BEGIN IMMEDIATE` is retried with `asyncio.sleep`.
    Reads (`read()`) keep aiosqlite's worker threads. The writer does not checkpoint the WAL
    itself (a checkpoint copies pages and syncs the file): every `_CHECKPOINT_EVERY` changes a
    passive checkpoint runs on a worker thread with a connection of its own, while writing goes on.
    PostgreSQL needs no such lock.
    """

    def __init__(self, url: str, *, pool_size: int = 10, inline: bool = False) -> None:
        """`inline` (SQLite only): run SQLite on the event loop's thread instead of aiosqlite's worker
        thread. Each statement then blocks the loop for its duration but skips two thread hand-overs;
        for a job that is the only user of its loop and its files (replay) that is several times faster.
        """
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            if inline:
                self.engine: AsyncEngine = create_async_engine(
                    url, async_creator=lambda: _InlineSqlite(partial(sqlite3.connect, path, timeout=30,
                                                                     check_same_thread=False), 64))
            else:
                self.engine = create_async_engine(url, connect_args={"timeout": 30})
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            self._write_engine: AsyncEngine | None = None
            if path and path != ":memory:":  # (a second connection to ":memory:" is another database)
                self._write_engine = create_async_engine(
                    url, pool_size=1, max_overflow=0,
                    async_creator=lambda: _InlineSqlite(partial(sqlite3.connect, path, timeout=0,
                                                                check_same_thread=False), 64))
                event.listen(self._write_engine.sync_engine, "connect", _sqlite_writer_pragmas)
        else:
            self._write_engine = None
            # A transaction left idle (its coroutine stuck or gone) would hold the append lock and
            # wedge every writer; PostgreSQL ends such a session after a minute instead.
            self.engine = create_async_engine(
                # No ping per checkout (a round trip for every transaction): connections are recycled
                # after half an hour, and one found dead fails its transaction once and is replaced
                # (SQLAlchemy invalidates the pool's connections on a disconnect error).
                url, pool_size=pool_size, max_overflow=20, pool_recycle=1800, pool_timeout=20,
                connect_args={"server_settings": {"idle_in_transaction_session_timeout": "60000",
                                                  "application_name": "placematch"}})
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._writer: AsyncConnection | None = None
        self._writer_raw: sqlite3.Connection | None = None
        self._writing = False
        self._changes_at_checkpoint = 0
        self._checkpoint: asyncio.Task[None] | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._path = url.split("///", 1)[-1] if self.is_sqlite else ""
        self.committed = asyncio.Event()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; on commit, runs what `after_commit` queued and wakes whoever waits
        on `committed`. A transaction rolled back (or retried after a conflict) runs nothing."""
        async with self._begin() as conn:
            conn.info.pop(AFTER_COMMIT, None)  # nothing left by a use of this connection outside here
            try:
                yield conn
            finally:
                pending: list[Callable[[], None]] = conn.info.pop(AFTER_COMMIT, [])
        for done in pending:
            done()
        self.committed.set()

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is not None and self._write_engine is None:
            async with self._write_lock, self.engine.begin() as conn:
                yield conn
        elif self._write_lock is not None:
            async with self._write_lock:
                conn, raw = await self._begin_immediate()
                self._writing = True
                try:
                    yield conn
                except BaseException:
                    self._writing = False
                    await self._end_writer(conn, raw, commit=False)
                    raise
                self._writing = False
                await self._end_writer(conn, raw, commit=True)
        else:
            async with self.engine.begin() as conn:
                yield conn

    def sqlite_writer(self, conn: AsyncConnection) -> sqlite3.Connection | None:
        """The sqlite3 connection under `conn` when `conn` is this database's SQLite writer inside
        `transaction()`: statements on it run in that transaction, synchronously (the store's
        append and load path use it directly, without SQLAlchemy's per-statement work)."""
        if self._writing and conn is self._writer:
            return self._writer_raw
        return None

    async def _begin_immediate(self) -> tuple[AsyncConnection, sqlite3.Connection]:
        assert self._write_engine is not None
        if self._writer is None or self._writer_raw is None:
            conn = await self._write_engine.connect()
            raw = (await conn.get_raw_connection()).driver_connection
            self._writer, self._writer_raw = conn, raw._connection  # type: ignore[union-attr]
        conn, raw = self._writer, self._writer_raw
        assert raw is not None
        delay, waited = 0.001, 0.0
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return conn, raw
            except sqlite3.OperationalError as exc:
                # another process writes: wait for it without blocking the loop (busy_timeout is 0)
                if "locked" not in str(exc) and "busy" not in str(exc) or waited > _SQLITE_BUSY_SECONDS:
                    raise driver_error("BEGIN IMMEDIATE", exc) from exc
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.05)

    async def _end_writer(self, conn: AsyncConnection, raw: sqlite3.Connection, *, commit: bool) -> None:
        try:
            if conn.in_transaction():  # SQLAlchemy began too (it does not know of our BEGIN)
                await (conn.commit() if commit else conn.rollback())
            if raw.in_transaction:
                try:
                    raw.commit() if commit else raw.rollback()
                except sqlite3.Error as exc:
                    raise driver_error("COMMIT" if commit else "ROLLBACK", exc) from exc
            if raw.total_changes - self._changes_at_checkpoint >= _CHECKPOINT_EVERY and (
                    self._checkpoint is None or self._checkpoint.done()):
                self._changes_at_checkpoint = raw.total_changes
                self._checkpoint = asyncio.get_running_loop().create_task(asyncio.to_thread(self._checkpoint_wal))
        except BaseException:
            # leave nothing half-done on the writer: roll back and start afresh with a new connection
            try:
                if raw.in_transaction:
                    raw.rollback()
                await conn.close()
            except Exception:  # pragma: no cover - the connection is dropped anyway
                pass
            self._writer = self._writer_raw = None
            raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def _checkpoint_wal(self) -> None:
        """A passive WAL checkpoint (on a worker thread): never waits for, nor blocks, the writer."""
        try:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(self._path, timeout=0, check_same_thread=False,
                                                     isolation_level=None)
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:  # the next one will catch up
            pass

    async def dispose(self) -> None:
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
            self._checkpoint = None
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._writer is not None:
            await self._writer.close()
            self._writer = self._writer_raw = None
        if self._write_engine is not None:
            await self._write_engine.dispose()
        await self.engine.dispose()


class _InlineSqlite(aiosqlite.Connection):
    """aiosqlite's connection interface, with every call made directly on the calling thread."""

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def _connect(self) -> _InlineSqlite:
        if self._connection is None:
            self._connection = self._connector()
        return self

    def __await__(self) -> Any:  # no worker thread to start
        return self._connect().__await__()

    def stop(self) -> None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None


AFTER_COMMIT = "placematch.after_commit"


def after_commit(conn: AsyncConnection, done: Callable[[], None]) -> None:
    """Run `done` once the `Database.transaction` of `conn` has committed (never if it rolls back)."""
    conn.info.setdefault(AFTER_COMMIT, []).append(done)


def driver_error(statement: str, error: Exception) -> Exception:
    """An error of a statement run on the driver directly (sqlite3, asyncpg) as the SQLAlchemy
    error SQLAlchemy would have raised for it (`OperationalError` for "database is locked",
    `InterfaceError` for a lost asyncpg connection, ...), so callers see one kind of error: the
    web layer answers the transient ones 503 as before."""
    return sqlalchemy.exc.DBAPIError.instance(statement, None, error, Exception)


_SQLITE_BUSY_SECONDS = 30.0
_CHECKPOINT_EVERY = 2000
"""Rows changed by the writer between two WAL checkpoints (SQLite's own default: 1000 pages)."""


def _sqlite_writer_pragmas(dbapi_connection: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_connection, record)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=0")  # the writer waits in `_begin_immediate`, off the loop
    cursor.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run on a worker thread (`_checkpoint_wal`)
    cursor.close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")  # erased personal data must not linger in free pages
    cursor.close()


async def insert_ignore(conn: AsyncConnection, table: Table, values: dict[str, Any]) -> bool:
    """INSERT unless the primary/unique key exists. True when a row was inserted."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover
        raise RuntimeError(f"unsupported dialect {dialect}")
    result = await conn.execute(stmt)
    return bool(result.rowcount)


async def upsert(conn: AsyncConnection, table: Table, values: dict[str, Any], keys: list[str]) -> None:
    """INSERT or UPDATE the row identified by `keys` (a primary or unique key)."""
    await upsert_many(conn, table, [values], keys)


async def upsert_many(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """`upsert` for many rows (same columns) in one statement."""
    if not rows:
        return
    module: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = module.insert(table)
    updates = {k: stmt.excluded[k] for k in rows[0] if k not in keys}
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_=updates) if updates else stmt.on_conflict_do_nothing()
    # parameters apart from the statement: compiled once and cached, run as executemany
    await conn.execute(stmt, rows if len(rows) > 1 else rows[0])
