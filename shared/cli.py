"""The `placematch` command line: run the services, mint tokens, fill a demo, audit, replay, back up."""
from __future__ import annotations

import asyncio
import faulthandler
import importlib
import os
import signal
from pathlib import Path
from typing import Any, Optional

import httpx
import typer
from rich.console import Console
from rich.table import Table

from shared.settings import SERVICES, Settings

app = typer.Typer(help="placematch: regional commissioning of children's placements.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)  # a crash's locals hold settings' secrets
console = Console()


KNOWN_SECRETS = {Settings.model_fields["jwt_secret"].default, "change-me-in-production-please-0123456789"}
"""Secrets printed in this repository: `serve` (production) refuses them."""


def load_create_app(service: str) -> Any:
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    return importlib.import_module(f"services.{service}.app").create_app


def _uvicorn_server(fastapi_app: Any, host: str, port: int) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        def install_signal_handlers(self) -> None:  # uvicorn < 0.29
            return None

        def capture_signals(self) -> Any:  # one handler for all servers is installed by `up`
            import contextlib

            return contextlib.nullcontext()

    # proxy_headers=False: X-Forwarded-For counts only from PLACEMATCH_TRUSTED_PROXIES (shared.limits)
    return Server(uvicorn.Config(fastapi_app, host=host, port=port, log_level="warning", lifespan="on",
                                 log_config=None, timeout_graceful_shutdown=10, proxy_headers=False))


@app.command()
def up(
    base_port: int = typer.Option(8000, envvar="PLACEMATCH_BASE_PORT",
                                  help="Services listen on BASE+1 (enrolment) .. BASE+4 (notification)."),
    data_dir: Path = typer.Option(Path("var"), envvar="PLACEMATCH_DATA_DIR",
                                  help="Where the SQLite files and the local bus live."),
    host: str = typer.Option("127.0.0.1", envvar="PLACEMATCH_HOST", help="Interface to listen on."),
) -> None:
    """Run all four services on this machine: SQLite under DATA_DIR, in-process bus, no Kafka."""
    from shared.logs import configure_logging

    os.environ.setdefault("PLACEMATCH_WEBHOOK_ALLOW_PRIVATE", "true")
    base = Settings()
    configure_logging(base.log_format, base.log_level)
    data_dir.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {"data_dir": data_dir, "base_port": base_port, "host": host,
                                 "kafka_bootstrap": None, "database_url": None, "port": None}
    maildrop = None
    if base.email_enabled and "PLACEMATCH_SMTP_HOST" not in os.environ:
        from shared.maildrop import start_maildrop

        maildrop = start_maildrop(data_dir / "mail")
        overrides |= {"smtp_host": maildrop.hostname, "smtp_port": maildrop.port}
        console.print(f"email alerts are written to {data_dir / 'mail'} (set PLACEMATCH_SMTP_HOST to send them)")
    settings = base.model_copy(update=overrides)

    async def main() -> None:
        servers = []
        table = Table(title=f"placematch is starting (data in {data_dir.resolve()})")
        table.add_column("service")
        table.add_column("url")
        table.add_column("docs")
        for service in SERVICES:
            port = settings.port_for(service)
            servers.append(_uvicorn_server(load_create_app(service)(settings), host, port))
            table.add_row(service, f"http://{host}:{port}", f"http://{host}:{port}/docs")
        console.print(table)
        loop = asyncio.get_running_loop()

        def stop() -> None:
            if any(server.should_exit for server in servers):  # a second Ctrl-C: stop now
                for server in servers:
                    server.force_exit = True
                return
            console.print("stopping… (Ctrl-C again to stop at once)")
            # if something holds the stop up, say where (every thread's stack on stderr)
            faulthandler.dump_traceback_later(20, exit=False)
            for server in servers:
                server.should_exit = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        tasks = [asyncio.create_task(s.serve()) for s in servers]

        async def announce() -> None:
            while not all(s.started for s in servers):
                if any(t.done() for t in tasks):
                    return
                await asyncio.sleep(0.05)
            console.print("[bold green]placematch is up[/] — Ctrl-C stops it")

        await asyncio.gather(announce(), *tasks)
        failed = [t for t in tasks if t.exception() is not None] if all(t.done() for t in tasks) else []
        if failed or not all(s.started for s in servers):
            raise typer.Exit(1)

    try:
        asyncio.run(main())
    finally:
        if maildrop is not None:
            maildrop.stop()


@app.command()
def serve(service: str = typer.Argument(..., help="enrolment | referral | matching | notification")) -> None:
    """Run one service alone, configured from the environment (Kafka + PostgreSQL in production)."""
    import uvicorn

    from shared.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    if settings.jwt_secret in KNOWN_SECRETS or len(settings.jwt_secret.encode()) < 32:
        console.print("[red]PLACEMATCH_JWT_SECRET is unset, a published default or shorter than 32 bytes: anyone "
                      "could mint a commissioner token. Set a long random secret (e.g. `openssl rand -hex 32`).[/]")
        raise typer.Exit(2)
    if service == "notification":
        _check_secrets_key(settings)
    fastapi_app = load_create_app(service)(settings)
    uvicorn.run(fastapi_app, host=settings.host, port=settings.port_for(service), log_config=None,
                log_level="warning", proxy_headers=False)


def _check_secrets_key(settings: Settings) -> None:
    """Production keeps webhook signing secrets under a key of its own, never one left on a disk by chance."""
    from services.notification.vault import SecretsKeyError, parse_keys

    if not settings.secrets_key:
        console.print("[red]PLACEMATCH_SECRETS_KEY is unset: notification seals the webhook signing secrets with it. "
                      "Set it to a random key (`openssl rand -base64 32`) and keep it safe: without it the stored "
                      "secrets cannot be opened.[/]")
        raise typer.Exit(2)
    try:
        parse_keys(settings.secrets_key)
    except SecretsKeyError as error:
        console.print(f"[red]{error}[/]")
        raise typer.Exit(2) from None


@app.command()
def migrate(service: str = typer.Argument(..., help="enrolment | referral | matching | notification")) -> None:
    """Bring a service's database to the newest schema (also done by `serve` at start-up)."""
    from shared.db import Database
    from shared.migrations import upgrade

    load_create_app(service)
    settings = Settings()

    async def main() -> None:
        db = Database(settings.database_url_for(service))
        try:
            await upgrade(db, service)
        finally:
            await db.dispose()

    asyncio.run(main())
    console.print(f"{service}: database is at the newest revision")


@app.command()
def token(
    role: str = typer.Option(..., help="commissioner | borough | provider | auditor"),
    tenant: str = typer.Option(..., help="Borough code (e.g. croydon), provider id, or region name: "
                                          "[a-z0-9][a-z0-9_-]{0,63}, lower-cased."),
    sub: Optional[str] = typer.Option(None, help="Subject; default role:tenant."),
    ttl_days: int = typer.Option(30, help="Days until the token expires."),
) -> None:
    """Mint a bearer token signed with PLACEMATCH_JWT_SECRET (for local use and scripts)."""
    from shared.auth import ClaimError, mint_token

    try:
        typer.echo(mint_token(Settings(), role, tenant, sub, ttl_seconds=ttl_days * 86400))
    except ClaimError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"--{exc.claim}") from exc


@app.command()
def demo(
    base_port: int = typer.Option(8000, envvar="PLACEMATCH_BASE_PORT",
                                  help="Where `placematch up` listens (services at BASE+1..BASE+4)."),
    seed: int = typer.Option(7, help="Same seed, same requests in the same order."),
    referrals: int = typer.Option(300, help="How many referrals to raise."),
    providers: int = typer.Option(100, help="How many providers apply."),
    host: str = typer.Option("127.0.0.1", envvar="PLACEMATCH_HOST", help="Host of the running services."),
) -> None:
    """Fill a running placematch with a realistic region through its public APIs."""
    from shared.demo import run_demo

    settings = Settings(base_port=base_port)

    def base_url(service: str) -> str:
        return f"http://{host}:{settings.port_for(service)}"

    from shared.demo import DemoError

    try:
        counts = asyncio.run(run_demo(base_url, seed=seed, referrals=referrals, providers=providers, console=console))
    except DemoError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    except httpx.ConnectError as exc:
        console.print(f"[red]cannot reach placematch at {base_url('enrolment')}: start it with `placematch up`[/]")
        raise typer.Exit(1) from exc
    if counts.get("errors"):
        raise typer.Exit(1)


@app.command()
def verify(
    data_dir: Path = typer.Option(Path("var"), envvar="PLACEMATCH_DATA_DIR",
                                  help="Embedded data directory holding <service>.db files."),
    service: Optional[str] = typer.Option(None, help="Only this service."),
    database_url: Optional[str] = typer.Option(None, envvar="PLACEMATCH_DATABASE_URL",
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
                table.add_row(name, str(report.events),
                              f"[red]BROKEN at position {b.position} (stream {b.stream_id} v{b.version}): {b.reason}[/]")
        console.print(table)
        return all_ok

    if not asyncio.run(main()):
        raise typer.Exit(1)


@app.command()
def replay(
    data_dir: Path = typer.Option(Path("var"), envvar="PLACEMATCH_DATA_DIR",
                                  help="Embedded data directory holding <service>.db files."),
    service: str = typer.Option("all", help="matching | referral | all"),
    source: str = typer.Option("stores", "--from", help="stores: the services' event stores (embedded) | "
                               "topics: the bus topics from the beginning, with a fresh consumer group "
                               "(Kafka when PLACEMATCH_KAFKA_BOOTSTRAP is set, else DATA_DIR/bus.db); matching only"),
    journal_url: Optional[str] = typer.Option(None, "--journal", help="With --from topics: matching's database "
                                              "URL, whose journal gives the exact input order (else: the local bus's log "
                                              "order, or event time on Kafka)."),
    quality_weight: Optional[str] = typer.Option(None, help="Replay matching under another quality weight (what-if)."),
    price_weight: Optional[str] = typer.Option(None, help="Replay matching under another price weight (what-if)."),
) -> None:
    """Rebuild read models from the event log into fresh databases (DATA_DIR/replay/) and check
    that every matching decision and every referral view is reproduced; exit 1 on any difference."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from services.matching.replay import ReplayInputs, difference_summary, inputs_from_bus, replay_matching
    from services.referral.replay import replay_referral

    if source not in ("stores", "topics"):
        raise typer.BadParameter("stores or topics", param_hint="--from")
    if service not in ("matching", "referral", "all"):
        raise typer.BadParameter("replay knows matching and referral", param_hint="--service")
    if source == "topics" and service == "referral":
        raise typer.BadParameter("referral's views are rebuilt from its store (they are compared with its "
                                 "live tables); --from topics replays matching", param_hint="--service")
    wanted = ["matching"] if source == "topics" else ["matching", "referral"] if service == "all" else [service]
    for name in wanted if source == "stores" else ():
        if not (data_dir / f"{name}.db").exists():
            console.print(f"[red]no {name} store at {data_dir / f'{name}.db'}[/]")
            raise typer.Exit(2)
    topic_inputs: ReplayInputs | None = None
    if source == "topics":
        from shared.bus import make_bus

        settings = Settings(data_dir=data_dir)
        if not settings.kafka_bootstrap and not (data_dir / "bus.db").exists():
            console.print(f"[red]no Kafka (PLACEMATCH_KAFKA_BOOTSTRAP) and no local bus at {data_dir / 'bus.db'}[/]")
            raise typer.Exit(2)

        async def read() -> ReplayInputs:
            bus = make_bus(settings)
            await bus.start()
            try:
                return await inputs_from_bus(bus, settings.topic, journal_url=journal_url)
            finally:
                await bus.stop()

        with console.status("reading the topics from the beginning…"):
            try:
                topic_inputs = asyncio.run(read())
            except LookupError as error:
                console.print(f"[red]{error}[/]")
                raise typer.Exit(2)
        console.print(f"read {len(topic_inputs.inputs)} inputs and "
                      f"{sum(map(len, topic_inputs.recorded.values()))} recorded decisions from {topic_inputs.source}")
    (data_dir / "replay").mkdir(parents=True, exist_ok=True)
    ok = True
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks = {name: bar.add_task(f"replaying {name}", total=None) for name in wanted}

        def progress_of(name: str) -> Any:
            return lambda done, total: bar.update(tasks[name], completed=done, total=total)

        matching_report = asyncio.run(replay_matching(
            data_dir, data_dir / "replay" / "matching.db", quality_weight=quality_weight, price_weight=price_weight,
            progress=progress_of("matching"), source=topic_inputs)) if "matching" in wanted else None
        referral_report = asyncio.run(replay_referral(
            data_dir, data_dir / "replay" / "referral.db", progress=progress_of("referral"))) if "referral" in wanted else None
    if matching_report is not None:
        report = matching_report
        console.print(f"matching: inputs replayed: {report.inputs}; decisions recorded: {report.decisions_recorded}; "
                      f"re-derived: {report.decisions_replayed}")
        if report.missing_inputs:
            console.print(f"[red]{len(report.missing_inputs)} inputs missing from the stores[/], e.g. {report.missing_inputs[:3]}")
        if report.dead_lettered:
            console.print(f"[yellow]{len(report.dead_lettered)} unusable inputs set aside, as live matching sent them "
                          f"to the dead-letter topic[/], e.g. {report.dead_lettered[:3]}")
        if report.differences:
            table = Table(title=f"{len(report.differences)} decisions differ")
            for column in ("referral", "decision", "recorded", "replayed"):
                table.add_column(column, overflow="fold")
            for diff in report.differences[:50]:
                row = difference_summary(diff)
                table.add_row(row["referral"], str(row["decision"]), row["recorded"], row["replayed"])
            console.print(table)
        ok = ok and report.ok
        if report.ok:
            console.print("[green]matching: every decision reproduced byte for byte[/]")
    if referral_report is not None:
        console.print(f"referral: {referral_report.referrals} referrals and {referral_report.inputs} consumed events replayed")
        for diff in referral_report.differences:
            console.print(f"[red]referral table {diff.table} differs[/] ({diff.live_rows} live, {diff.rebuilt_rows} "
                          f"rebuilt): {diff.first_difference}")
        ok = ok and referral_report.ok
        if referral_report.ok:
            console.print("[green]referral: every read model rebuilt identical[/]")
    if not ok:
        raise typer.Exit(1)


@app.command("backup")
def backup_command(
    target: Path = typer.Argument(..., help="A new (or empty) directory for the copies and their manifest."),
    data_dir: Path = typer.Option(Path("var"), envvar="PLACEMATCH_DATA_DIR",
                                  help="Embedded data directory holding <service>.db files and bus.db."),
) -> None:
    """Copy every store of the embedded run (each service's database and the local bus) into TARGET,
    consistent across them, also while `placematch up` runs; write a manifest (sizes, sha256)."""
    from shared.backup import BackupError, backup

    try:
        manifest = backup(data_dir, target)
    except BackupError as error:
        console.print(f"[red]{error}[/]")
        raise typer.Exit(1) from error
    _print_manifest(f"backup of {data_dir} in {target}", manifest)


@app.command("restore")
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
    _print_manifest(f"restored {source} into {data_dir}", manifest)
    console.print(f"snapshot of {manifest['snapshot_at']}; check it with `placematch verify --data-dir {data_dir}`")


def _print_manifest(title: str, manifest: dict[str, Any]) -> None:
    table = Table(title=title)
    for column in ("file", "kind", "bytes", "sha256", "schema"):
        table.add_column(column)
    for entry in manifest["files"]:
        table.add_row(entry["name"], entry["kind"], str(entry["bytes"]), entry["sha256"][:16] + "…",
                      entry["schema_revision"] or "-")
    console.print(table)


audit_app = typer.Typer(help="Evidence packs reconstructed from the event log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("referral")
def audit_referral(
    referral_id: str = typer.Argument(..., help="The referral's id."),
    data_dir: Path = typer.Option(Path("var"), envvar="PLACEMATCH_DATA_DIR",
                                  help="Embedded data directory holding <service>.db files."),
    html: Optional[Path] = typer.Option(None, help="Also write a printable HTML page here."),
) -> None:
    """The evidence pack of one referral, from every service's event store, as JSON."""
    import orjson

    from services.referral.audit import build_audit_pack, render_html

    from shared.store import read_embedded, read_embedded_people

    pack = build_audit_pack(referral_id, asyncio.run(read_embedded(data_dir, SERVICES)),
                            asyncio.run(read_embedded_people(data_dir, SERVICES)))
    if pack["raised"] is None:
        console.print(f"[red]no referral {referral_id} in the stores under {data_dir}[/]")
        raise typer.Exit(1)
    typer.echo(orjson.dumps(pack, option=orjson.OPT_INDENT_2).decode())
    if html:
        html.write_text(render_html(pack))
        console.print(f"wrote {html}", style="green")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
