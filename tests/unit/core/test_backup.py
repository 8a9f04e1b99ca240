"""The backup's copies of several SQLite files show them at one instant, whatever writers do meanwhile.

Two writers hand rows from one file to the other as the services hand events on (a relay: store,
then bus; a consumer: bus, then store), in opposite directions, so copying the files one after
another, in either order, could show a row in the second file that its first file does not have.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from services import SERVICES
from shared.backup import BackupError, backup, read_manifest, restore


def _store(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE forward (n INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE backward (n INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()


def _hand_on(first: Path, second: Path, table: str, stop: threading.Event) -> None:
    """Commit row n in `first`, then (another transaction) in `second`: never in second before first."""
    a, b = sqlite3.connect(first, timeout=30), sqlite3.connect(second, timeout=30)
    n = 0
    while not stop.is_set():
        n += 1
        for conn in (a, b):
            conn.execute(f"INSERT INTO {table} VALUES (?)", (n,))
            conn.commit()
    a.close()
    b.close()


def _count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def test_copies_taken_under_load_are_of_one_instant(tmp_path: Path) -> None:
    data = tmp_path / "var"
    data.mkdir()
    store, bus = data / "referral.db", data / "bus.db"
    _store(store)
    _store(bus)
    stop = threading.Event()
    writers = [threading.Thread(target=_hand_on, args=(store, bus, "forward", stop)),
               threading.Thread(target=_hand_on, args=(bus, store, "backward", stop))]
    for writer in writers:
        writer.start()
    try:
        for i in range(8):
            copy = tmp_path / f"backup-{i}"
            manifest = backup(data, copy, services=SERVICES)
            assert [f["name"] for f in manifest["files"]] == ["referral.db", "bus.db"]
            assert _count(copy / "bus.db", "forward") <= _count(copy / "referral.db", "forward")
            assert _count(copy / "referral.db", "backward") <= _count(copy / "bus.db", "backward")
            assert not list(copy.glob("*-wal"))
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert _count(bus, "forward") > 0 and _count(store, "backward") > 0


def _one_store(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "var"
    data.mkdir()
    _store(data / "referral.db")
    copy = tmp_path / "backup"
    backup(data, copy)
    return data, copy


def test_restore_refuses_a_non_empty_data_dir_unless_forced_and_never_one_in_use(tmp_path: Path) -> None:
    data, copy = _one_store(tmp_path)
    with pytest.raises(BackupError, match="not empty"):
        restore(copy, data)
    in_use = sqlite3.connect(data / "referral.db")
    in_use.execute("SELECT count(*) FROM forward").fetchone()
    try:
        with pytest.raises(BackupError, match="in use"):
            restore(copy, data, force=True)
    finally:
        in_use.close()
    (data / "stale.db").write_bytes(b"")
    restore(copy, data, force=True)
    assert sorted(p.name for p in data.iterdir()) == ["referral.db"]


def test_restore_checks_the_manifest(tmp_path: Path) -> None:
    _, copy = _one_store(tmp_path)
    assert read_manifest(copy)["format"] == 1
    (copy / "referral.db").write_bytes((copy / "referral.db").read_bytes() + b"x")
    with pytest.raises(BackupError, match="bytes"):
        restore(copy, tmp_path / "fresh")
    (copy / "manifest.json").unlink()
    with pytest.raises(BackupError, match="manifest.json"):
        restore(copy, tmp_path / "fresh")
    assert not (tmp_path / "fresh" / "referral.db").exists()


def test_backup_wants_a_new_directory(tmp_path: Path) -> None:
    data, copy = _one_store(tmp_path)
    with pytest.raises(BackupError, match="not empty"):
        backup(data, copy)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackupError, match="no stores"):
        backup(tmp_path / "empty", tmp_path / "other")


def test_a_file_that_is_no_database_is_named_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "referral.db").write_bytes(b"not a database, just text " * 100)
    with pytest.raises(BackupError, match="referral.db"):
        backup(tmp_path / "var", tmp_path / "backup")
    assert not list((tmp_path / "backup").iterdir())
