"""How the command line finds the services (services/__init__.py), and `python -m services.cli`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import services
from services import SERVICES, port_for
from services.cli import app
from services.cli.common import listen_port, load_create_app
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def test_ports_follow_the_order_of_the_services() -> None:
    assert [port_for(s, 8000) for s in SERVICES] == [8001, 8002, 8003, 8004, 8005]
    assert listen_port(Settings(base_port=9000, port=None), "matching") == 9003
    assert listen_port(Settings(base_port=9000, port=7777), "matching") == 7777
    with pytest.raises(LookupError, match="unknown service 'billing'"):
        port_for("billing", 8000)


def test_a_service_is_reached_through_its_modules() -> None:
    from services.referral import audit
    from services.referral.app import create_app

    assert services.create_app("referral") is create_app
    assert services.module("referral", "audit") is audit
    with pytest.raises(typer.BadParameter, match="one of enrolment, referral, matching, notification, placement"):
        load_create_app("billing")


def test_migrate_refuses_an_unknown_service() -> None:
    refused = CliRunner().invoke(app, ["migrate", "billing"])
    assert refused.exit_code == 2 and "unknown service 'billing'" in refused.output


def test_python_dash_m_services_cli_is_placematch() -> None:
    listed = subprocess.run([sys.executable, "-m", "services.cli", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""})
    assert listed.returncode == 0, listed.stderr
    for command in ("up", "serve", "migrate", "token", "demo", "verify", "replay", "backup", "restore", "audit"):
        assert f" {command} " in listed.stdout
