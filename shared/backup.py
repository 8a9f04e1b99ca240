"""Backup and restore of the embedded run's data directory (`placematch backup` / `restore`).

What is copied: every SQLite store at the top of the data directory — each service's
`<service>.db` (its events, outbox, read models, processed-event journal, idempotency keys; the
referral service's per-referral Fernet keys live in `referral.db` too, and notification's webhook
signing secrets in `notification.db`, sealed under the secrets key) and the local bus `bus.db` (the
message log and every consumer group's committed offset), plus the key files beside them (`*.key`:
the generated secrets key when `PLACEMATCH_SECRETS_KEY` is not set). Not copied: `replay/`
(rebuilt by `placematch replay`), `mail/` (copies of emails already handed to the mail server; the
delivery log is in `notification.db`) and any other file; the manifest lists what was left out.
The JWT secret is configuration (`PLACEMATCH_JWT_SECRET`), not data: keep it apart.

Why the copies are consistent with each other. The services hand events from store to store:
a relay publishes a store's outbox to the bus, then deletes those rows; a consumer records an
event in its store, then commits its offset on the bus. Every service is both a producer and a
consumer, so no order of copying one file after another is safe: copying a consumer's store
before the bus can keep an offset committed after the copy for an event the copy never took in —
lost on restore. Instead the backup *pauses the writers for an instant*: it takes the write lock
of every store (`BEGIN IMMEDIATE`; a writer's commit waits meanwhile, as for any other writer,
within its 30 s busy timeout), opens a read transaction on each (in WAL mode a read transaction
is a snapshot of the database as of its start), and lets the writers go again. The snapshots then
show all the stores as they were at one instant at which no transaction of any file was half
done — exactly what a crash at that instant would leave behind. The design is safe against a crash
anywhere (outbox rows still present are published again, redelivered events are recognised by
their ids in `processed_events`, an Idempotency-Key claim of a vanished process is taken over),
so a restored copy resumes like a restart after that crash: nothing lost, nothing done twice.
The pages are then copied from the snapshots with SQLite's online backup API
(`sqlite3.Connection.backup`) while the services go on writing.

Personal data: the copies hold the child's sealed identity *and* the keys that open it. An
erasure made after a backup is not in that backup; restoring it brings the erased identity
back. Keep backups under the same protection as the data directory (they are written 0600 in a
0700 directory) and no longer than erasures may take.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

MANIFEST = "manifest.json"
FORMAT = 1
"""Version of the backup layout and manifest; `restore` refuses another."""

LEFT_OUT = {"replay": "rebuilt by `placematch replay`",
            "mail": "copies of emails already handed to the mail server (their delivery log is in notification.db)"}


class BackupError(Exception):
    """A backup or restore that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class StoreFile:
    name: str
    bytes: int
    sha256: str
    kind: str
    schema_revision: str | None


def stores_in(data_dir: Path, services: Sequence[str] = ()) -> list[Path]:
    """The SQLite stores at the top of `data_dir`: the `services`' stores in that order, then the bus, then others."""
    found = {p.name: p for p in data_dir.glob("*.db") if p.is_file()}
    order = [f"{s}.db" for s in services] + ["bus.db"]
    return [found[n] for n in order if n in found] + [found[n] for n in sorted(found) if n not in order]


def _kind(name: str, services: Sequence[str]) -> str:
    if name == "bus.db":
        return "local bus"
    return "service store" if name.removesuffix(".db") in services else "store"


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
    """An autocommit connection to an existing database (never creates one)."""
    return sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=timeout, isolation_level=None,
                           check_same_thread=False)


@contextlib.contextmanager
def consistent_snapshots(paths: list[Path], *, lock_timeout: float = 5.0,
                         attempts: int = 12) -> Iterator[list[sqlite3.Connection]]:
    """One read transaction per store, all begun while every store's writers were held back.

    The write locks are taken in a fixed order, each within `lock_timeout`; if one cannot be had
    (a long writer), all are let go and the whole is tried again, so the backup never holds some
    writers back for long while waiting on another.
    """
    last: Exception | None = None
    for attempt in range(attempts):
        readers: list[sqlite3.Connection] = []
        lockers: list[sqlite3.Connection] = []
        path = paths[0]
        try:
            for path in paths:
                locker = _connect(path, lock_timeout)
                lockers.append(locker)
                locker.execute("BEGIN IMMEDIATE")
            for path in paths:
                reader = _connect(path, lock_timeout)
                readers.append(reader)
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts here
        except sqlite3.DatabaseError as error:
            if not _busy(error):
                for reader in readers:
                    reader.close()
                raise BackupError(f"{path}: {error}") from error
            last = error
            for reader in readers:
                reader.close()
            readers = []
        finally:
            for locker in lockers:
                with contextlib.suppress(sqlite3.Error):
                    locker.execute("ROLLBACK")
                locker.close()
        if readers:
            try:
                yield readers
            finally:
                for reader in readers:
                    reader.close()
            return
        time.sleep(min(0.1 * 2 ** attempt, 2.0))
    raise BackupError(f"could not hold every store's writers back at once ({last}); try again")


def _busy(error: sqlite3.DatabaseError) -> bool:
    """Locked by another connection (rather than, say, not a database at all)."""
    return isinstance(error, sqlite3.OperationalError) and ("locked" in str(error) or "busy" in str(error))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _schema_revision(conn: sqlite3.Connection, name: str) -> str | None:
    """The store's Alembic revision (`alembic_version_<service>`, see shared.migrations)."""
    try:
        row = conn.execute(f'SELECT version_num FROM "alembic_version_{name.removesuffix(".db")}"').fetchone()
    except sqlite3.OperationalError:  # the bus, or a store never migrated
        return None
    return row[0] if row else None


def _copy_snapshot(reader: sqlite3.Connection, target: Path, services: Sequence[str]) -> StoreFile:
    """Copy one snapshot into `target` as a self-contained file (rollback journal, no -wal)."""
    dest = sqlite3.connect(target, isolation_level=None)
    try:
        reader.backup(dest)
        dest.execute("PRAGMA journal_mode=DELETE")
        check = dest.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise BackupError(f"{target.name}: the copy fails SQLite's check: {check}")
        revision = _schema_revision(dest, target.name)
    finally:
        dest.close()
    os.chmod(target, 0o600)
    return StoreFile(target.name, target.stat().st_size, _sha256(target), _kind(target.name, services), revision)


def keys_in(data_dir: Path) -> list[Path]:
    """Key files a store needs to be read (`*.key`, e.g. the key that opens notification's sealed
    webhook secrets when no key is given in settings): without them a restored store is unreadable."""
    return sorted(p for p in data_dir.glob("*.key") if p.is_file())


def _copy_key(source: Path, target: Path) -> StoreFile:
    shutil.copyfile(source, target)
    os.chmod(target, 0o600)
    return StoreFile(target.name, target.stat().st_size, _sha256(target), "key", None)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("placematch")
    except PackageNotFoundError:
        return "unknown"


def backup(data_dir: Path, target: Path, *, services: Sequence[str] = ()) -> dict[str, Any]:
    """Copy every store of `data_dir` into the new directory `target`, consistently; return the manifest.

    The manifest is written last: a directory without one is an unfinished backup. `services`: the
    names whose `<name>.db` are service stores, copied first in that order (`services.SERVICES`).
    """
    paths = stores_in(data_dir, services)
    if not paths:
        raise BackupError(f"no stores (*.db) in {data_dir}")
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty: give a new directory for each backup")
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(target, 0o700)
    started = datetime.now(UTC)
    try:
        with consistent_snapshots(paths) as readers:
            taken = datetime.now(UTC)
            files = [_copy_snapshot(reader, target / path.name, services)
                     for reader, path in zip(readers, paths, strict=True)]
            files += [_copy_key(path, target / path.name) for path in keys_in(data_dir)]
    except BaseException:
        for leftover in target.iterdir():  # no half backup beside a good one
            leftover.unlink()
        raise
    copied = {f.name for f in files}
    left_out = {entry.name + ("/" if entry.is_dir() else ""): LEFT_OUT.get(entry.name, "not a store")
                for entry in sorted(data_dir.iterdir())
                if entry.name not in copied and not entry.name.endswith(("-wal", "-shm", "-journal"))}
    manifest = {
        "format": FORMAT,
        "placematch_version": _version(),
        "started_at": started.isoformat(),
        "snapshot_at": taken.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "source": str(data_dir.resolve()),
        "consistency": "every store's writers held back while one read snapshot per store began: one instant",
        "files": [vars(f) for f in files],
        "left_out": left_out,
    }
    partial = target / f"{MANIFEST}.partial"
    partial.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    os.chmod(partial, 0o600)
    partial.replace(target / MANIFEST)
    return manifest


def read_manifest(source: Path) -> dict[str, Any]:
    """The manifest of the backup in `source`, once every file it names is there and intact."""
    path = source / MANIFEST
    if not path.is_file():
        raise BackupError(f"no {MANIFEST} in {source}: not a placematch backup, or an unfinished one")
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as error:
        raise BackupError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: backup format {manifest.get('format') if isinstance(manifest, dict) else '?'} "
                          f"is not {FORMAT}, the one this placematch restores")
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise BackupError(f"{path} lists no files")
    for entry in files:
        name = str(entry.get("name", ""))
        if Path(name).name != name or not name.endswith((".db", ".key")):
            raise BackupError(f"{path}: {name!r} is not a store's or a key's file name")
        copy = source / name
        if not copy.is_file():
            raise BackupError(f"{name} is missing from {source}")
        if copy.stat().st_size != entry.get("bytes"):
            raise BackupError(f"{name} has {copy.stat().st_size} bytes, the manifest says {entry.get('bytes')}")
        if _sha256(copy) != entry.get("sha256"):
            raise BackupError(f"{name} does not match its sha256 in the manifest: the copy is damaged")
    return manifest


def _in_use(path: Path) -> bool:
    """True when another connection has the database open (a running `placematch up`)."""
    probe = _connect(path, 0.2)
    try:
        probe.execute("PRAGMA locking_mode=EXCLUSIVE")
        probe.execute("BEGIN EXCLUSIVE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.DatabaseError as error:
        return _busy(error)
    finally:
        probe.close()


def restore(source: Path, data_dir: Path, *, force: bool = False) -> dict[str, Any]:
    """Put the backup in `source` into `data_dir`; return its manifest.

    `data_dir` must be empty (or missing) unless `force`; then its stores, their WAL files and
    `replay/` (built from the stores being replaced) are removed first. A store in use — the
    services still running on it — is never replaced.
    """
    manifest = read_manifest(source)
    if data_dir.exists() and any(data_dir.iterdir()):
        if not force:
            raise BackupError(f"{data_dir} is not empty: restore into a new directory, or pass --force to "
                              "replace its stores")
        busy = [p.name for p in stores_in(data_dir) if _in_use(p)]
        if busy:
            raise BackupError(f"{', '.join(busy)} in {data_dir} is in use: stop placematch first")
        for path in stores_in(data_dir):
            for leftover in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
                leftover.unlink(missing_ok=True)
        shutil.rmtree(data_dir / "replay", ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    for entry in manifest["files"]:
        partial = data_dir / f"{entry['name']}.restoring"
        shutil.copyfile(source / entry["name"], partial)
        with partial.open("rb") as f:
            os.fsync(f.fileno())
        if _sha256(partial) != entry["sha256"]:
            partial.unlink()
            raise BackupError(f"{entry['name']}: the restored copy does not match the manifest")
        os.chmod(partial, 0o600)
        partial.replace(data_dir / entry["name"])
    return manifest
