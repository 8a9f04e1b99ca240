"""`placematch verify` and `replay`: check the stores' hash chains, rebuild read models and compare."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

import services
from services import SERVICES
from services.cli.common import console
from shared.settings import Settings


def verify(
    data_dir: Path = typer.Option(Path("var"), envvar="PLACEMATCH_DATA_DIR",
                                  help="Embedded data directory holding <service>.db files."),
    service: str | None = typer.Option(None, help="Only this service."),
    database_url: str | None = typer.Option(None, envvar="PLACEMATCH_DATABASE_URL",
                                               help="Check this database instead (needs --service)."),
) -> None:
    """Check every service's event store hash chain; name the first broken link and exit 1."""
    from shared.db import Database, sqlite_url
    from shared.integrity import verify_store

    names = [service] if service else list(SERVICES)

    async def main() -> bool:
        table = Table(title="event store integrity")
        for column in ("service", "events", "result"):
            table.add_column(column)
        all_ok = True
        for name in names:
            url = database_url if (database_url and service) else sqlite_url(data_dir / f"{name}.db")
            if url.startswith("sqlite") and not (data_dir / f"{name}.db").exists():
                table.add_row(name, "-", "[yellow]no store[/]")
                continue
            db = Database(url)
            try:
                report = await verify_store(db)
            finally:
                await db.dispose()
            if report.ok:
                table.add_row(name, str(report.events), "[green]intact[/]")
            else:
                all_ok = False
                b = report.broken
                assert b is not None  # not ok: a broken link
                table.add_row(name, str(report.events),
                              f"[red]BROKEN at position {b.position} (stream {b.stream_id} v{b.version}): "
                              f"{b.reason}[/]")
        console.print(table)
        return all_ok

    if not asyncio.run(main()):
        raise typer.Exit(1)


REPLAYED = ("matching", "referral", "placement")
"""The services `placematch replay` rebuilds; matching and placement also from the topics."""
FROM_TOPICS = ("matching", "placement")


def replay(
    data_dir: Path = typer.Option(Path("var"), envvar="PLACEMATCH_DATA_DIR",
                                  help="Embedded data directory holding <service>.db files."),
    service: str = typer.Option("all", help="matching | referral | placement | all"),
    source: str = typer.Option("stores", "--from", help="stores: the services' event stores (embedded) | "
                               "topics: the bus topics from the beginning, with a fresh consumer group "
                               "(Kafka when PLACEMATCH_KAFKA_BOOTSTRAP is set, else DATA_DIR/bus.db); "
                               "matching and placement"),
    journal_url: str | None = typer.Option(None, "--journal", help="With --from topics: matching's database "
                                           "URL, whose journal gives the exact input order (else: the local bus's "
                                           "log order, or event time on Kafka)."),
    placement_journal_url: str | None = typer.Option(
        None, "--placement-journal", help="With --from topics: placement's database URL, whose journal gives the "
        "exact input order (else: the local bus's log order, or event time on Kafka); its views are compared "
        "with that database's (else with DATA_DIR/placement.db when it exists)."),
    quality_weight: str | None = typer.Option(None, help="Replay matching under another quality weight (what-if)."),
    price_weight: str | None = typer.Option(None, help="Replay matching under another price weight (what-if)."),
) -> None:
    """Rebuild read models from the event log into fresh databases (DATA_DIR/replay/) and check
    that every matching decision, every referral view and every placement stream and view is
    reproduced; exit 1 on any difference."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    matching, referral = services.module("matching", "replay"), services.module("referral", "replay")
    placement = services.module("placement", "replay")

    if source not in ("stores", "topics"):
        raise typer.BadParameter("stores or topics", param_hint="--from")
    if service not in (*REPLAYED, "all"):
        raise typer.BadParameter(f"replay knows {', '.join(REPLAYED)}", param_hint="--service")
    if source == "topics" and service == "referral":
        raise typer.BadParameter("referral's views are rebuilt from its store (they are compared with its "
                                 "live tables); --from topics replays matching and placement", param_hint="--service")
    wanted = (list(FROM_TOPICS) if source == "topics" else list(REPLAYED)) if service == "all" else [service]
    for name in list(wanted) if source == "stores" else ():
        if not (data_dir / f"{name}.db").exists():
            if service == "all" and name == "placement":  # a data directory from before placements
                wanted.remove(name)
                continue
            console.print(f"[red]no {name} store at {data_dir / f'{name}.db'}[/]")
            raise typer.Exit(2)
    topic_inputs: Any = None  # matching's ReplayInputs
    placement_inputs: Any = None  # placement's ReplayInputs
    if source == "topics":
        from shared.bus import make_bus

        settings = Settings(data_dir=data_dir)
        if not settings.kafka_bootstrap and not (data_dir / "bus.db").exists():
            console.print(f"[red]no Kafka (PLACEMATCH_KAFKA_BOOTSTRAP) and no local bus at {data_dir / 'bus.db'}[/]")
            raise typer.Exit(2)

        async def read() -> tuple[Any, Any]:
            bus = make_bus(settings)
            await bus.start()
            try:
                found_matching = await matching.inputs_from_bus(bus, settings.topic, journal_url=journal_url) \
                    if "matching" in wanted else None
                found_placement = await placement.inputs_from_bus(bus, settings.topic,
                                                                  journal_url=placement_journal_url) \
                    if "placement" in wanted else None
                return found_matching, found_placement
            finally:
                await bus.stop()

        with console.status("reading the topics from the beginning…"):
            try:
                topic_inputs, placement_inputs = asyncio.run(read())
            except LookupError as error:
                console.print(f"[red]{error}[/]")
                raise typer.Exit(2) from None
        if topic_inputs is not None:
            console.print(f"read {len(topic_inputs.inputs)} inputs and "
                          f"{sum(map(len, topic_inputs.recorded.values()))} recorded decisions from "
                          f"{topic_inputs.source}")
        if placement_inputs is not None:
            console.print(f"placement: read {len(placement_inputs.inputs)} inputs and "
                          f"{len(placement_inputs.recorded)} recorded placement events from {placement_inputs.source}")
    (data_dir / "replay").mkdir(parents=True, exist_ok=True)
    ok = True
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks = {name: bar.add_task(f"replaying {name}", total=None) for name in wanted}

        def progress_of(name: str) -> Any:
            return lambda done, total: bar.update(tasks[name], completed=done, total=total)

        matching_report = asyncio.run(matching.replay_matching(
            data_dir, data_dir / "replay" / "matching.db", quality_weight=quality_weight, price_weight=price_weight,
            progress=progress_of("matching"), source=topic_inputs)) if "matching" in wanted else None
        referral_report = asyncio.run(referral.replay_referral(
            data_dir, data_dir / "replay" / "referral.db",
            progress=progress_of("referral"))) if "referral" in wanted else None
        placement_report = asyncio.run(placement.replay_placement(
            data_dir, data_dir / "replay" / "placement.db", source=placement_inputs,
            live_url=placement_journal_url)) if "placement" in wanted else None
        if placement_report is not None:
            bar.update(tasks["placement"], completed=placement_report.inputs, total=placement_report.inputs)
    if matching_report is not None:
        report = matching_report
        console.print(f"matching: inputs replayed: {report.inputs}; decisions recorded: {report.decisions_recorded}; "
                      f"re-derived: {report.decisions_replayed}")
        _print_problems(matching, report, "", missing="inputs missing from the stores", who="matching",
                        title="decisions differ", columns=("referral", "decision"))
        ok = ok and report.ok
        if report.ok:
            console.print("[green]matching: every decision reproduced byte for byte[/]")
    if referral_report is not None:
        console.print(f"referral: {referral_report.referrals} referrals and {referral_report.inputs} "
                      "consumed events replayed")
        for diff in referral_report.differences:
            console.print(f"[red]referral table {diff.table} differs[/] ({diff.live_rows} live, {diff.rebuilt_rows} "
                          f"rebuilt): {diff.first_difference}")
        ok = ok and referral_report.ok
        if referral_report.ok:
            console.print("[green]referral: every read model rebuilt identical[/]")
    if placement_report is not None:
        _print_placement(placement, placement_report)
        ok = ok and placement_report.ok
    if not ok:
        raise typer.Exit(1)


def _print_placement(placement: Any, report: Any) -> None:
    console.print(f"placement: inputs replayed: {report.inputs}; events recorded: {report.events_recorded}; "
                  f"replayed: {report.events_replayed}; view rows compared: {report.view_rows_compared} "
                  f"(from {report.source})")
    _print_problems(placement, report, "placement: ", missing="inputs missing", who="placement",
                    title="differences", columns=("where", "item"))
    if report.ok:
        console.print("[green]placement: every placement stream and view reproduced byte for byte[/]")


def _print_problems(replayer: Any, report: Any, prefix: str, *, missing: str, who: str, title: str,
                    columns: tuple[str, str]) -> None:
    """A replay's missing and set-aside inputs and its differences (the first 50, by `replayer.difference_summary`)."""
    if report.missing_inputs:
        console.print(f"[red]{prefix}{len(report.missing_inputs)} {missing}[/], e.g. {report.missing_inputs[:3]}")
    if report.dead_lettered:
        console.print(f"[yellow]{prefix}{len(report.dead_lettered)} unusable inputs set aside, as live {who} sent them "
                      f"to the dead-letter topic[/], e.g. {report.dead_lettered[:3]}")
    if report.differences:
        table = Table(title=f"{prefix}{len(report.differences)} {title}")
        for column in (*columns, "recorded", "replayed"):
            table.add_column(column, overflow="fold")
        for diff in report.differences[:50]:
            row = replayer.difference_summary(diff)
            table.add_row(row[columns[0]], str(row[columns[1]]), row["recorded"], row["replayed"])
        console.print(table)
