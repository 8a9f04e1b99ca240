"""`placematch backup` while `placematch up` runs and is written to; `placematch restore` into a fresh
directory: the copy replays, verifies, and runs again with every referral (and its sealed identity)."""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from rich.console import Console

from services.demo import BOROUGHS, run_demo
from tests.e2e.support import REFERRAL, Stack, bearer, cli, ok
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


async def _referrals(stack: Stack, client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """Every referral as its own borough sees it (with `child_ref`), by id."""
    found: dict[str, dict[str, Any]] = {}
    for borough in BOROUGHS:
        items = ok(await client.get(f"{stack.url('referral')}/referrals", params={"limit": 200},
                                    headers=bearer("borough", borough)))["items"]
        for item in items:
            found[item["id"]] = ok(await client.get(f"{stack.url('referral')}/referrals/{item['id']}",
                                                    headers=bearer("borough", borough)))
    return found


async def test_backup_of_a_running_stack_restores_replays_verifies_and_runs(stack: Stack, tmp_path: Path) -> None:
    await stack.start()
    counts = await run_demo(stack.url, seed=5, providers=10, referrals=8, console=Console(width=120))
    assert counts["errors"] == 0 and counts["referrals_raised"] == 8
    async with httpx.AsyncClient(timeout=10) as client:
        before = await _referrals(stack, client)
    assert len(before) == 8 and all(view["child_ref"] for view in before.values())

    raised: list[str] = []
    stop = asyncio.Event()

    async def keep_raising() -> None:
        """Croydon raises referrals (each fanned out to matching and notification) throughout the backup."""
        async with httpx.AsyncClient(timeout=30) as client:
            while not stop.is_set():
                body = {**REFERRAL, "child_ref": f"CR-BACKUP-{len(raised):04d}"}
                created = ok(await client.post(f"{stack.url('referral')}/referrals", json=body,
                                               headers=bearer("borough", "croydon")), 201)
                raised.append(created["id"])

    writer = asyncio.create_task(keep_raising())
    await wait_for(lambda: len(raised) >= 3 or writer.done(), timeout=60, message="referrals being raised")
    answered_before_backup = list(raised)
    backup_dir = tmp_path / "backup"
    backed_up = await asyncio.to_thread(cli, "backup", str(backup_dir), "--data-dir", str(stack.data_dir))
    stop.set()
    await writer
    assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr
    stack.stop()
    logged = stack.log.read_text()
    assert not [view["child_ref"] for view in before.values() if view["child_ref"] in logged]

    manifest = orjson.loads((backup_dir / "manifest.json").read_bytes())
    names = {entry["name"] for entry in manifest["files"]}
    # the generated secrets key too: without it notification could not open its sealed webhook secrets
    assert names == {"enrolment.db", "referral.db", "matching.db", "notification.db", "placement.db", "bus.db",
                     "secrets.key"}
    assert all(len(entry["sha256"]) == 64 and entry["bytes"] > 0 for entry in manifest["files"])
    assert {e["name"]: e["schema_revision"] for e in manifest["files"]}["referral.db"]

    refused = cli("restore", str(backup_dir), "--data-dir", str(stack.data_dir))
    assert refused.returncode == 1 and "not empty" in refused.stdout, refused.stdout
    damaged = tmp_path / "damaged"
    shutil.copytree(backup_dir, damaged)
    copy = bytearray((damaged / "matching.db").read_bytes())
    copy[-1] ^= 0xFF
    (damaged / "matching.db").write_bytes(bytes(copy))
    rejected = cli("restore", str(damaged), "--data-dir", str(tmp_path / "never"))
    assert rejected.returncode == 1 and "sha256" in rejected.stdout, rejected.stdout
    assert not (tmp_path / "never" / "referral.db").exists()

    restored_dir = tmp_path / "restored"
    restored_run = cli("restore", str(backup_dir), "--data-dir", str(restored_dir))
    assert restored_run.returncode == 0, restored_run.stdout + restored_run.stderr
    replayed = cli("replay", "--data-dir", str(restored_dir))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "matching: every decision reproduced byte for byte" in replayed.stdout
    assert "referral: every read model rebuilt identical" in replayed.stdout
    verified = cli("verify", "--data-dir", str(restored_dir))
    assert verified.returncode == 0 and "BROKEN" not in verified.stdout, verified.stdout

    restored = Stack(restored_dir)
    try:
        await restored.start()
        async with httpx.AsyncClient(timeout=10) as client:
            after = await _referrals(restored, client)
            for rid, view in before.items():  # the referrals, and the keys that open their child's identity
                assert after[rid]["child_ref"] == view["child_ref"] and after[rid]["status"] == view["status"]
            assert set(answered_before_backup) <= set(after)
            assert set(after) <= set(before) | set(raised)

            async def matching_knows_every_referral() -> bool:
                for rid, view in after.items():
                    found = await client.get(f"{restored.url('matching')}/referrals/{rid}/eligible-providers",
                                             headers=bearer("borough", view["borough"]))
                    assert found.status_code == 200, f"{rid}: {found.status_code} {found.text}"
                return True

            # whatever was in flight at the snapshot is delivered after the restart: nothing lost at the cut
            await wait_for(matching_knows_every_referral, timeout=60, interval=0.5,
                           message="matching of the restored stack to know every restored referral")
    finally:
        if restored.process is not None and restored.process.poll() is None:
            restored.stop()
