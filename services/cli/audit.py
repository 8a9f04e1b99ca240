"""`placematch audit`: evidence packs reconstructed from the event log."""
from __future__ import annotations

import asyncio
from pathlib import Path

import typer

import services
from services import SERVICES
from services.cli.common import console


def audit_referral(
    referral_id: str = typer.Argument(..., help="The referral's id."),
    data_dir: Path = typer.Option(Path("var"), envvar="PLACEMATCH_DATA_DIR",
                                  help="Embedded data directory holding <service>.db files."),
    html: Path | None = typer.Option(None, help="Also write a printable HTML page here."),
) -> None:
    """The evidence pack of one referral, from every service's event store, as JSON."""
    import orjson

    from shared.store import read_embedded, read_embedded_people

    audit = services.module("referral", "audit")
    pack = audit.build_audit_pack(referral_id, asyncio.run(read_embedded(data_dir, SERVICES)),
                                  asyncio.run(read_embedded_people(data_dir, SERVICES)))
    if pack["raised"] is None:
        console.print(f"[red]no referral {referral_id} in the stores under {data_dir}[/]")
        raise typer.Exit(1)
    typer.echo(orjson.dumps(pack, option=orjson.OPT_INDENT_2).decode())
    if html:
        html.write_text(audit.render_html(pack))
        console.print(f"wrote {html}", style="green")
