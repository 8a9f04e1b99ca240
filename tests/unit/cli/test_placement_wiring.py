"""The placement service in the operations tools: migrate, verify, replay, audit's page, backup."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from services.cli import app as cli
from services.cli.audit import with_placements

WIDE = {"COLUMNS": "200"}


def test_migrate_verify_and_replay_an_empty_placement_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "var"
    data.mkdir()
    monkeypatch.setenv("PLACEMATCH_DATA_DIR", str(data))
    monkeypatch.delenv("PLACEMATCH_DATABASE_URL", raising=False)
    migrated = CliRunner().invoke(cli, ["migrate", "placement"], env=WIDE)
    assert migrated.exit_code == 0, migrated.output
    with sqlite3.connect(data / "placement.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version_placement").fetchone()[0].startswith("placement_")
    verified = CliRunner().invoke(cli, ["verify", "--data-dir", str(data), "--service", "placement"], env=WIDE)
    assert verified.exit_code == 0 and "intact" in verified.output, verified.output
    replayed = CliRunner().invoke(cli, ["replay", "--data-dir", str(data), "--service", "placement"], env=WIDE)
    assert replayed.exit_code == 0, replayed.output
    assert "placement: every placement stream and view reproduced byte for byte" in replayed.output
    assert (data / "replay" / "placement.db").exists()


def test_replay_names_placement_among_the_services_it_knows(tmp_path: Path) -> None:
    refused = CliRunner().invoke(cli, ["replay", "--data-dir", str(tmp_path), "--service", "billing"], env=WIDE)
    assert refused.exit_code == 2 and "placement" in refused.output
    missing = CliRunner().invoke(cli, ["replay", "--data-dir", str(tmp_path), "--service", "placement"], env=WIDE)
    assert missing.exit_code == 2 and "no placement store" in missing.output


def test_backup_copies_the_placement_store_as_a_service_store(tmp_path: Path) -> None:
    data = tmp_path / "var"
    data.mkdir()
    for name in ("placement.db", "referral.db", "bus.db"):
        with sqlite3.connect(data / name) as conn:
            conn.execute("CREATE TABLE t (x INTEGER)")
    backed = CliRunner().invoke(cli, ["backup", str(tmp_path / "copy"), "--data-dir", str(data)], env=WIDE)
    assert backed.exit_code == 0, backed.output
    manifest = orjson.loads((tmp_path / "copy" / "manifest.json").read_bytes())
    assert [(f["name"], f["kind"]) for f in manifest["files"]] == [
        ("referral.db", "service store"), ("placement.db", "service store"), ("bus.db", "local bus")]


def test_the_printable_pack_gets_a_placements_section_escaped() -> None:
    placements = [{"placement_id": "p-1", "provider_id": "prov", "outcome": "ended", "steps": [
        {"time": "2026-12-02T10:00:00Z", "type": "placement-ended", "actor": "borough:croydon",
         "what": "Ended unplanned on 2027-01-01: <breakdown>"}]}]
    page = with_placements("<html><body><h1>Pack</h1></body></html>", placements)
    assert page.index("<h1>Pack</h1>") < page.index('<section id="placements">') < page.index("</body>")
    assert "&lt;breakdown&gt;" in page and "<breakdown>" not in page
    assert with_placements("<html><body></body></html>", []) == "<html><body></body></html>"
