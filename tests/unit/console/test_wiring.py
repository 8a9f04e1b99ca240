"""The console is wired into the command line, compose and the image."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from services.cli import app as cli
from services.console.settings import ConsoleSettings

ROOT = Path(__file__).resolve().parents[3]


def test_serve_console_refuses_dev_sign_in_default_secret_and_no_issuer(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PLACEMATCH_CONSOLE_SESSION_SECRET", "PLACEMATCH_CONSOLE_OIDC_ISSUER", "PLACEMATCH_OIDC_ISSUER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLACEMATCH_CONSOLE_DEV_SIGN_IN", "true")
    result = CliRunner().invoke(cli, ["serve", "console"])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "PLACEMATCH_CONSOLE_SESSION_SECRET" in output
    assert "PLACEMATCH_CONSOLE_DEV_SIGN_IN is on" in output
    assert "No identity provider" in output


def test_production_settings_have_no_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLACEMATCH_CONSOLE_DEV_SIGN_IN", raising=False)
    settings = ConsoleSettings(console_session_secret="x" * 40, console_oidc_issuer="https://id.example/realm")
    assert settings.production_problems() == []


def test_compose_runs_the_console_against_the_services_by_name() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    console = compose["services"]["console"]
    assert console["command"] == ["serve", "console"]
    assert console["ports"] == ["8006:8006"]
    env = console["environment"]
    assert env["PLACEMATCH_PORT"] == "8006"
    for service, port in (("enrolment", 8001), ("referral", 8002), ("matching", 8003), ("notification", 8004)):
        assert env[f"PLACEMATCH_CONSOLE_{service.upper()}_URL"] == f"http://{service}:{port}"
        assert console["depends_on"][service] == {"condition": "service_healthy"}
    assert "PLACEMATCH_CONSOLE_SESSION_SECRET" in env and "PLACEMATCH_CONSOLE_OIDC_ISSUER" in env
    settings = ConsoleSettings(console_port=None, port=8006,
                               **{f"console_{s}_url": env[f"PLACEMATCH_CONSOLE_{s.upper()}_URL"]
                                  for s in ("enrolment", "referral", "matching", "notification")})
    assert settings.console_listen_port == 8006
    assert settings.service_url("matching") == "http://matching:8003"


def test_the_image_builds_the_console_assets() -> None:
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert "npm" in dockerfile
    assert dockerfile.index("console-assets.sh") < dockerfile.index("pip install")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"static/**/*"' in pyproject
