"""What the commands share: the console, the known secrets, a service's app and port."""
from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

import services
from services import SERVICES
from shared.settings import Settings

console = Console()

KNOWN_SECRETS = {Settings.model_fields["jwt_secret"].default, "change-me-in-production-please-0123456789"}
"""Secrets printed in this repository: `serve` (production) refuses them."""


def load_create_app(service: str) -> Any:
    """The `create_app` of `service`; an unknown one is a bad parameter."""
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    return services.create_app(service)


def listen_port(settings: Settings, service: str) -> int:
    """`PLACEMATCH_PORT` if set, else the service's place after the base port."""
    return settings.port or services.port_for(service, settings.base_port)


def print_manifest(title: str, manifest: dict[str, Any]) -> None:
    table = Table(title=title)
    for column in ("file", "kind", "bytes", "sha256", "schema"):
        table.add_column(column)
    for entry in manifest["files"]:
        table.add_row(entry["name"], entry["kind"], str(entry["bytes"]), entry["sha256"][:16] + "…",
                      entry["schema_revision"] or "-")
    console.print(table)
