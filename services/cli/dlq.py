"""`placematch dlq list | show | redrive`: the dead letters of the embedded run (the local bus under
--data-dir) or of Kafka (PLACEMATCH_KAFKA_BOOTSTRAP set)."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.table import Table

from services.cli.common import console
from shared.settings import Settings

app = typer.Typer(help="Dead letters: events a consumer gave up on, and re-driving them.", no_args_is_help=True)
T = TypeVar("T")

DATA_DIR = typer.Option(Path("var"), envvar="PLACEMATCH_DATA_DIR",
                        help="Embedded data directory holding bus.db (ignored with PLACEMATCH_KAFKA_BOOTSTRAP).")
TOPIC = typer.Option(None, "--topic", help="Only this topic's dead letters: a short name (referral) or a full one.")


def _with_bus(data_dir: Path, work: Callable[[Any, Settings], Awaitable[T]]) -> T:
    from shared.bus import make_bus

    settings = Settings(data_dir=data_dir)
    if not settings.kafka_bootstrap and not (data_dir / "bus.db").exists():
        console.print(f"[red]no embedded bus at {data_dir / 'bus.db'}: give --data-dir of `placematch up`, "
                      "or set PLACEMATCH_KAFKA_BOOTSTRAP[/]")
        raise typer.Exit(1)

    async def main() -> T:
        bus = make_bus(settings)
        await bus.start()
        try:
            return await work(bus, settings)
        finally:
            await bus.stop()

    return asyncio.run(main())


async def _letters(bus: Any, settings: Settings, topic: str | None) -> list[Any]:
    from shared import dlq

    topics = await dlq.dlq_topics(bus, settings)
    if topic is not None:
        wanted = dlq.dlq_topic(settings, topic)
        topics = [t for t in topics if t == wanted]
    return await dlq.read(bus, topics)


def list_command(topic: str | None = TOPIC, data_dir: Path = DATA_DIR,
                 as_json: bool = typer.Option(False, "--json", help="One JSON object a line.")) -> None:
    """What failed, when, why and after how many attempts; whether it was re-driven."""
    letters = _with_bus(data_dir, lambda bus, settings: _letters(bus, settings, topic))
    if as_json:
        for letter in letters:
            typer.echo(json.dumps(letter.summary()))
        return
    table = Table(title=f"{len(letters)} dead letter(s)")
    for column in ("id", "event", "consumer", "failed at", "attempts", "reason", "re-driven"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        s = letter.summary()
        table.add_row(s["id"], f"{s['type']} {s['event_id']}", s["consumer"] or "-", s["failed_at"],
                      str(s["attempts"] or "-"), s["reason"], s["redriven_at"] or ("no" if s["redrivable"] else "-"))
    console.print(table)


def show_command(ident: str = typer.Argument(..., help="The dead letter's id (topic:partition:offset) or event id."),
                 data_dir: Path = DATA_DIR) -> None:
    """One dead letter in full: the failure (traceback), its headers and the event."""
    from shared import dlq

    found = dlq.find(_with_bus(data_dir, lambda bus, settings: _letters(bus, settings, None)), ident)
    if not found:
        console.print(f"[red]no dead letter {ident}[/]")
        raise typer.Exit(1)
    for letter in found:
        typer.echo(json.dumps(letter.summary(), indent=2))
        typer.echo("error:\n" + (letter.error or "-"))
        try:
            event = json.loads(letter.value)
        except ValueError:
            event = letter.value.decode("utf-8", "replace")
        typer.echo("event:\n" + json.dumps(event, indent=2, sort_keys=True))


def redrive_command(
    ident: str | None = typer.Argument(None, help="The dead letter's id (topic:partition:offset) or event id."),
    all_: bool = typer.Option(False, "--all", help="Every dead letter not re-driven yet (of --topic, if given)."),
    topic: str | None = TOPIC,
    data_dir: Path = DATA_DIR,
) -> None:
    """Hand dead letters back to their consumers, once: one already re-driven is left alone."""
    from shared import dlq

    if (ident is None) == (not all_):
        raise typer.BadParameter("give a dead letter's ID or --all, not both or neither")

    async def work(bus: Any, settings: Settings) -> list[Any]:
        letters = await _letters(bus, settings, topic)
        chosen = letters if all_ else dlq.find(letters, ident or "")
        if not all_ and not chosen:
            return []
        if all_:
            chosen = [x for x in chosen if x.redrivable and not x.redriven]
        return await dlq.redrive(bus, chosen)

    results = _with_bus(data_dir, work)
    if not results and not all_:
        console.print(f"[red]no dead letter {ident}[/]")
        raise typer.Exit(1)
    for result in results:
        mark = "[green]re-driven[/]" if result.done else "[yellow]left[/]"
        console.print(f"{mark} {result.letter.id} ({result.letter.event_type} {result.letter.event_id}): {result.why}")
    console.print(f"{sum(r.done for r in results)} re-driven, {sum(not r.done for r in results)} left")


app.command("list")(list_command)
app.command("show")(show_command)
app.command("redrive")(redrive_command)
