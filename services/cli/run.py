"""`placematch up`, `serve`, `migrate` and `demo`: run the services, or fill them with a region."""
from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.table import Table

import services
from services import SERVICES
from services.cli.common import KNOWN_SECRETS, console, listen_port, load_create_app
from shared.settings import Settings


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


def up(
    base_port: int = typer.Option(8000, envvar="PLACEMATCH_BASE_PORT",
                                  help="Services listen on BASE+1 (enrolment) .. BASE+5 (placement)."),
    data_dir: Path = typer.Option(Path("var"), envvar="PLACEMATCH_DATA_DIR",
                                  help="Where the SQLite files and the local bus live."),
    host: str = typer.Option("127.0.0.1", envvar="PLACEMATCH_HOST", help="Interface to listen on."),
) -> None:
    """Run all five services on this machine: SQLite under DATA_DIR, in-process bus, no Kafka."""
    from services.notification.settings import NotificationSettings
    from shared.logs import configure_logging

    os.environ.setdefault("PLACEMATCH_WEBHOOK_ALLOW_PRIVATE", "true")
    os.environ.setdefault("PLACEMATCH_CONSOLE_DEV_SIGN_IN", "true")  # the console's local sign-in: `up` only
    base = Settings()
    configure_logging(base.log_format, base.log_level)
    data_dir.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {"data_dir": data_dir, "base_port": base_port, "host": host,
                                 "kafka_bootstrap": None, "database_url": None, "port": None}
    maildrop = None
    if NotificationSettings().email_enabled and "PLACEMATCH_SMTP_HOST" not in os.environ:
        from shared.maildrop import start_maildrop

        maildrop = start_maildrop(data_dir / "mail")
        # notification reads its own settings (services/notification/settings.py) from the environment
        os.environ["PLACEMATCH_SMTP_HOST"], os.environ["PLACEMATCH_SMTP_PORT"] = maildrop.hostname, str(maildrop.port)
        console.print(f"email alerts are written to {data_dir / 'mail'} (set PLACEMATCH_SMTP_HOST to send them)")
    settings = base.model_copy(update=overrides)

    async def main() -> None:
        servers = []
        table = Table(title=f"placematch is starting (data in {data_dir.resolve()})")
        table.add_column("service")
        table.add_column("url")
        table.add_column("docs")
        for service in SERVICES:
            port = listen_port(settings, service)
            servers.append(_uvicorn_server(load_create_app(service)(settings), host, port))
            table.add_row(service, f"http://{host}:{port}", f"http://{host}:{port}/docs")
        servers.append(_console_server(settings, host, table))
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


SERVICE_NAMES = " | ".join(SERVICES)


def _console_server(settings: Settings, host: str, table: Table) -> Any:
    """The commissioning console beside the services (base + 6); it has no database, so it is not in SERVICES."""
    from services.console.app import create_app as create_console
    from services.console.settings import ConsoleSettings

    console_settings = ConsoleSettings.of(settings)
    port = console_settings.console_listen_port
    table.add_row("console", f"http://{host}:{port}", "development sign-in: borough croydon")
    return _uvicorn_server(create_console(console_settings), host, port)


def _serve_console() -> None:
    """`placematch serve console`: refuses settings that would let anyone in (dev sign-in, default secret)."""
    import uvicorn

    from services.console.app import create_app as create_console
    from services.console.settings import ConsoleSettings
    from shared.logs import configure_logging

    settings = ConsoleSettings()
    configure_logging(settings.log_format, settings.log_level)
    problems = settings.production_problems()
    if problems:
        for problem in problems:
            console.print(f"[red]{problem}[/]")
        raise typer.Exit(2)
    uvicorn.run(create_console(settings), host=settings.host, port=settings.console_listen_port, log_config=None,
                log_level="warning", proxy_headers=False)


def serve(service: str = typer.Argument(..., help=f"{SERVICE_NAMES} | console")) -> None:
    """Run one service alone, configured from the environment (Kafka + PostgreSQL in production)."""
    import uvicorn

    from shared.logs import configure_logging

    if service == "console":
        _serve_console()
        return
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    if settings.jwt_secret in KNOWN_SECRETS or len(settings.jwt_secret.encode()) < 32:
        console.print("[red]PLACEMATCH_JWT_SECRET is unset, a published default or shorter than 32 bytes: anyone "
                      "could mint a commissioner token. Set a long random secret (e.g. `openssl rand -hex 32`).[/]")
        raise typer.Exit(2)
    if service == "notification":
        from services.notification.settings import NotificationSettings

        _check_secrets_key(NotificationSettings())
    fastapi_app = load_create_app(service)(settings)
    uvicorn.run(fastapi_app, host=settings.host, port=listen_port(settings, service), log_config=None,
                log_level="warning", proxy_headers=False)


def _check_secrets_key(settings: Any) -> None:
    """Production keeps webhook signing secrets under a key of its own, never one left on a disk by chance."""
    vault = services.module("notification", "vault")

    if not settings.secrets_key:
        console.print("[red]PLACEMATCH_SECRETS_KEY is unset: notification seals the webhook signing secrets with it. "
                      "Set it to a random key (`openssl rand -base64 32`) and keep it safe: without it the stored "
                      "secrets cannot be opened.[/]")
        raise typer.Exit(2)
    try:
        vault.parse_keys(settings.secrets_key)
    except vault.SecretsKeyError as error:
        console.print(f"[red]{error}[/]")
        raise typer.Exit(2) from None


def migrate(service: str = typer.Argument(..., help=SERVICE_NAMES)) -> None:
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


def demo(
    base_port: int = typer.Option(8000, envvar="PLACEMATCH_BASE_PORT",
                                  help="Where `placematch up` listens (services at BASE+1..BASE+5)."),
    seed: int = typer.Option(7, help="Same seed, same requests in the same order."),
    referrals: int = typer.Option(300, help="How many referrals to raise."),
    providers: int = typer.Option(100, help="How many providers apply."),
    host: str = typer.Option("127.0.0.1", envvar="PLACEMATCH_HOST", help="Host of the running services."),
) -> None:
    """Fill a running placematch with a realistic region through its public APIs."""
    from services.demo import run_demo

    settings = Settings(base_port=base_port)

    def base_url(service: str) -> str:
        return f"http://{host}:{listen_port(settings, service)}"

    from services.demo import DemoError

    try:
        counts = asyncio.run(run_demo(base_url, seed=seed, referrals=referrals, providers=providers, console=console))
    except DemoError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    except httpx.ConnectError as exc:
        console.print(f"[red]cannot reach placematch at {base_url('enrolment')}: start it with `placematch up`[/]")
        raise typer.Exit(1) from exc
    from services.console.settings import CONSOLE_OFFSET

    console_port = base_port + CONSOLE_OFFSET
    console.print(f"the console: http://{host}:{console_port} (development sign-in: borough croydon, "
                  "or commissioner region)")
    if counts.get("errors"):
        raise typer.Exit(1)
