"""Event store append: placematch's EventStore vs the `eventsourcing` library's application recorder.

Both sides record the same CloudEvent bytes (the envelope is built inside the timed loop on both
sides), one writer, on the same database server or the same directory, with the same durability:
SQLite in WAL mode with synchronous=NORMAL (placematch's setting, applied to the library's
connections too); PostgreSQL is the one server both talk to. Both keep a global order (our
`position` under an advisory lock; the library's notification id under a table lock) and check
the expected stream version. Ours also maintains the stream and global hash chains.

The machine is shared, and its load changes from one second to the next: each figure is the
median of `ROUNDS` runs, ours and the library's alternating, each on a fresh database.
"""
from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.aggregate import NewEvent
from shared.db import Database
from shared.events import Envelope
from shared.migrations import create_core_schema
from shared.store import EventStore

from .common import Infra, Row, fresh_pg_database, pg_parts, referral_raised_data

STREAM_LENGTH = 10  # single appends: ten events per stream, each in its own transaction
BATCH = 50          # batched appends: fifty events of one stream in one transaction
ROUNDS = 3          # alternating runs per figure (median)


def _plan(n: int, batch: int) -> list[tuple[str, int, int]]:
    """(stream id, expected version, events) per transaction."""
    if batch == 1:
        streams = [str(uuid.uuid4()) for _ in range(n // STREAM_LENGTH + 1)]
        return [(streams[i // STREAM_LENGTH], i % STREAM_LENGTH, 1) for i in range(n)]
    return [(str(uuid.uuid4()), 0, batch) for _ in range(n // batch)]


async def _ours(url: str, payloads: list[dict[str, Any]], n: int, batch: int, warmup: int) -> float:
    db = Database(url)
    await create_core_schema(db)
    store = EventStore(db, "placematch/referral")

    async def run(plan: list[tuple[str, int, int]]) -> None:
        k = 0
        for stream_id, version, count in plan:
            events = [NewEvent("referral-raised", payloads[(k + j) % len(payloads)]) for j in range(count)]
            k += count
            async with db.transaction() as conn:
                await store.append(conn, stream_id, version, events)

    try:
        await run(_plan(warmup, batch))
        plan = _plan(n, batch)
        started = time.perf_counter()
        await run(plan)
        seconds = time.perf_counter() - started
    finally:
        await db.dispose()
    return sum(c for _, _, c in plan) / seconds


def _library(make_recorder: Callable[[], Any], payloads: list[dict[str, Any]], n: int, batch: int,
             warmup: int) -> float:
    from eventsourcing.persistence import StoredEvent

    recorder = make_recorder()

    def run(plan: list[tuple[str, int, int]]) -> None:
        k = 0
        for stream_id, version, count in plan:
            stored = []
            for j in range(count):
                data = payloads[(k + j) % len(payloads)]
                body = Envelope(type="referral-raised", subject=stream_id, data=data,
                                source="placematch/referral", sequence=version + j + 1).to_json()
                stored.append(StoredEvent(originator_id=uuid.UUID(stream_id), originator_version=version + j + 1,
                                          topic="referral-raised", state=body))
            k += count
            recorder.insert_events(stored)

    try:
        run(_plan(warmup, batch))
        plan = _plan(n, batch)
        started = time.perf_counter()
        run(plan)
        seconds = time.perf_counter() - started
    finally:
        recorder.datastore.close()
    return sum(c for _, _, c in plan) / seconds


def _sqlite_recorder(path: Path) -> Callable[[], Any]:
    def make() -> Any:
        from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

        datastore = SQLiteDatastore(str(path))
        pool = datastore.pool
        create = pool._create_connection

        def create_with_pragmas() -> Any:
            connection = create()
            connection._sqlite_conn.execute("PRAGMA synchronous=NORMAL")
            return connection

        pool._create_connection = create_with_pragmas  # same durability as placematch's SQLite
        recorder = SQLiteApplicationRecorder(datastore)
        recorder.create_table()
        return recorder

    return make


def _postgres_recorder(url: str) -> Callable[[], Any]:
    def make() -> Any:
        from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

        p = pg_parts(url)
        datastore = PostgresDatastore(p["dbname"], p["host"], p["port"], p["user"], p["password"])
        recorder = PostgresApplicationRecorder(datastore)
        recorder.create_table()
        return recorder

    return make


async def run(infra: Infra, quick: bool) -> list[Row]:
    payloads = referral_raised_data(200)
    n_single, n_batched, warmup = (400, 2000, 100) if quick else (3000, 20000, 300)
    rows: list[Row] = []
    size = len(Envelope("referral-raised", "x", payloads[0], "s").to_json())
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        for name in ("SQLite", "PostgreSQL") if infra.database_url else ("SQLite",):
            for mode, batch, n in (("single", 1, n_single), (f"batched x{BATCH}", BATCH, n_batched)):
                ours_runs: list[float] = []
                lib_runs: list[float] = []
                for attempt in range(1 if quick else ROUNDS):
                    label = f"{mode.split()[0]}_{name.lower()}_{attempt}"
                    if name == "SQLite":
                        ours_url = f"sqlite+aiosqlite:///{tmp}/ours_{label}.db"
                        make = _sqlite_recorder(Path(tmp) / f"lib_{label}.db")
                    else:
                        assert infra.database_url
                        ours_url = await fresh_pg_database(infra.database_url, f"ours_{label}")
                        make = _postgres_recorder(await fresh_pg_database(infra.database_url, f"lib_{label}"))
                    ours_runs.append(await _ours(ours_url, payloads, n, batch, warmup))
                    lib_runs.append(await asyncio.to_thread(_library, make, payloads, n, batch, warmup))
                ours, lib = statistics.median(ours_runs), statistics.median(lib_runs)
                runs = "" if len(ours_runs) == 1 else (
                    f"; median of {len(ours_runs)} alternating runs, ours "
                    + "/".join(f"{r:.0f}" for r in ours_runs) + ", library " + "/".join(f"{r:.0f}" for r in lib_runs))
                rows.append(Row("store", f"append {mode}, {name}", ours, lib, "events/s",
                                "eventsourcing ApplicationRecorder",
                                note=f"{n} events of ~{size} B" + runs))
    return rows
