"""`placematch audit`: evidence packs reconstructed from the event log."""
from __future__ import annotations

import asyncio
import html as markup
from pathlib import Path
from typing import Any

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
    """The evidence pack of one referral, from every service's event store, as JSON; with the
    history of the placements it led to (start, funding, reviews, fee changes, ending or collapse)."""
    import orjson

    from shared.store import read_embedded, read_embedded_people

    audit = services.module("referral", "audit")
    events = asyncio.run(read_embedded(data_dir, SERVICES))
    pack = audit.build_audit_pack(referral_id, events, asyncio.run(read_embedded_people(data_dir, SERVICES)))
    if pack["raised"] is None:
        console.print(f"[red]no referral {referral_id} in the stores under {data_dir}[/]")
        raise typer.Exit(1)
    pack["placements"] = services.module("placement", "audit").placement_history(referral_id, events)
    typer.echo(orjson.dumps(pack, option=orjson.OPT_INDENT_2).decode())
    if html:
        html.write_text(with_placements(audit.render_html(pack), pack["placements"]))
        console.print(f"wrote {html}", style="green")


def with_placements(page: str, placements: list[dict[str, Any]]) -> str:
    """The referral's printable pack with a section on its placements (before `</body>`)."""
    if not placements:
        return page
    parts = ["<section id=\"placements\"><h2>Placements</h2>"]
    for placement in placements:
        parts.append(f"<h3>Placement {markup.escape(placement['placement_id'])} — provider "
                     f"{markup.escape(str(placement['provider_id']))} ({markup.escape(placement['outcome'])})</h3>")
        parts.append("<table><tr><th>time</th><th>step</th><th>by</th><th>what</th></tr>")
        for step in placement["steps"]:
            parts.append(f"<tr><td>{markup.escape(str(step['time']))}</td><td>{markup.escape(step['type'])}</td>"
                         f"<td>{markup.escape(str(step['actor']))}</td><td>{markup.escape(step['what'])}</td></tr>")
        parts.append("</table>")
    parts.append("</section>")
    section = "\n".join(parts)
    at = page.rfind("</body>")
    return page[:at] + section + "\n" + page[at:] if at >= 0 else page + section
