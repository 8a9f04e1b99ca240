"""The `placematch` command line: run the services, mint tokens, fill a demo, audit, replay, back up.

Each job has its module (`run`, `replay`, `audit`, `ops`); this one puts their commands together,
in the order `placematch --help` lists them. A service reaches the command line through
`services.module(service, ...)` (its app, replay, audit), never an import of the core.
"""
from __future__ import annotations

import typer

from services.cli import audit, dlq, ops, replay, run

app = typer.Typer(help="placematch: regional commissioning of children's placements.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)  # a crash's locals hold settings' secrets
app.command()(run.up)
app.command()(run.serve)
app.command()(run.migrate)
app.command()(ops.token)
app.command()(run.demo)
app.command()(replay.verify)
app.command()(replay.replay)
app.command("backup")(ops.backup_command)
app.command("restore")(ops.restore_command)

audit_app = typer.Typer(help="Evidence packs reconstructed from the event log.", no_args_is_help=True)
audit_app.command("referral")(audit.audit_referral)
app.add_typer(audit_app, name="audit")
app.add_typer(dlq.app, name="dlq")


def main() -> None:
    app()
