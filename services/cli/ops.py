"""`placematch token`, `backup` and `restore`: the operator's tools."""
from __future__ import annotations

from pathlib import Path

import typer

from services import SERVICES
from services.cli.common import console, print_manifest
from shared.settings import Settings


def token(
    role: str = typer.Option(..., help="commissioner | borough | provider | auditor"),
    tenant: str = typer.Option(..., help="Borough code (e.g. croydon), provider id, or region name: "
                                          "[a-z0-9][a-z0-9_-]{0,63}, lower-cased."),
    sub: str | None = typer.Option(None, help="Subject; default role:tenant."),
    ttl_days: int = typer.Option(30, help="Days until the token expires."),
) -> None:
    """Mint a bearer token signed with PLACEMATCH_JWT_SECRET (for local use and scripts)."""
    from shared.auth import ClaimError, mint_token

    try:
        typer.echo(mint_token(Settings(), role, tenant, sub, ttl_seconds=ttl_days * 86400))
    except ClaimError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"--{exc.claim}") from exc


def backup_command(
    target: Path = typer.Argument(..., help="A new (or empty) directory for the copies and their manifest."),
    data_dir: Path = typer.Option(Path("var"), envvar="PLACEMATCH_DATA_DIR",
                                  help="Embedded data directory holding <service>.db files and bus.db."),
) -> None:
    """Copy every store of the embedded run (each service's database and the local bus) into TARGET,
    consistent across them, also while `placematch up` runs; write a manifest (sizes, sha256)."""
    from shared.backup import BackupError, backup

    try:
        manifest = backup(data_dir, target, services=SERVICES)
    except BackupError as error:
        console.print(f"[red]{error}[/]")
        raise typer.Exit(1) from error
    print_manifest(f"backup of {data_dir} in {target}", manifest)


def restore_command(
    source: Path = typer.Argument(..., help="A directory written by `placematch backup`."),
    data_dir: Path = typer.Option(Path("var"), envvar="PLACEMATCH_DATA_DIR",
                                  help="Embedded data directory to restore into (empty, unless --force)."),
    force: bool = typer.Option(False, "--force", help="Replace the stores of a non-empty data directory."),
) -> None:
    """Check a backup against its manifest and put its stores into DATA_DIR (stop placematch first)."""
    from shared.backup import BackupError, restore

    try:
        manifest = restore(source, data_dir, force=force)
    except BackupError as error:
        console.print(f"[red]{error}[/]")
        raise typer.Exit(1) from error
    print_manifest(f"restored {source} into {data_dir}", manifest)
    console.print(f"snapshot of {manifest['snapshot_at']}; check it with `placematch verify --data-dir {data_dir}`")
