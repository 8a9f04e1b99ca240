"""`placematch token` (services/cli/ops.py)."""
from __future__ import annotations

from typing import Any

import jwt
import orjson
import pytest
from typer.testing import CliRunner

from services.cli import app as cli


def test_placematch_token_refuses_a_bad_tenant(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("PLACEMATCH_DATA_DIR", str(tmp_path))
    refused = CliRunner().invoke(cli, ["token", "--role", "borough", "--tenant", "x" * 101])
    assert refused.exit_code == 2
    assert "--tenant" in refused.output and "64" in refused.output
    minted = CliRunner().invoke(cli, ["token", "--role", "borough", "--tenant", "CROYDON"])
    assert minted.exit_code == 0, minted.output
    assert jwt.decode(minted.output.strip(), options={"verify_signature": False})["tenant"] == "croydon"


def test_backup_and_restore_print_the_manifest(tmp_path: Any) -> None:
    """`placematch backup` copies the service stores first, named as such; `restore` puts them back."""
    import sqlite3

    data = tmp_path / "var"
    data.mkdir()
    for name in ("referral.db", "bus.db", "enrolment.db"):
        with sqlite3.connect(data / name) as conn:
            conn.execute("CREATE TABLE t (x INTEGER)")
    backed = CliRunner().invoke(cli, ["backup", str(tmp_path / "copy"), "--data-dir", str(data)],
                                env={"COLUMNS": "200"})
    assert backed.exit_code == 0, backed.output
    manifest = orjson.loads((tmp_path / "copy" / "manifest.json").read_bytes())
    assert [(f["name"], f["kind"]) for f in manifest["files"]] == [
        ("enrolment.db", "service store"), ("referral.db", "service store"), ("bus.db", "local bus")]
    assert "enrolment.db" in backed.output and "service store" in backed.output
    restored = CliRunner().invoke(cli, ["restore", str(tmp_path / "copy"), "--data-dir", str(tmp_path / "new")],
                                  env={"COLUMNS": "200"})
    assert restored.exit_code == 0, restored.output
    assert sorted(p.name for p in (tmp_path / "new").glob("*.db")) == ["bus.db", "enrolment.db", "referral.db"]
