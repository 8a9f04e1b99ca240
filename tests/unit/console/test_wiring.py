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


def test_the_placement_service_is_at_base_plus_five_unless_set() -> None:
    assert ConsoleSettings(base_port=9000, host="127.0.0.1").service_url("placement") == "http://127.0.0.1:9005"
    explicit = ConsoleSettings(console_placement_url="http://placement:8005/")
    assert explicit.service_url("placement") == "http://placement:8005"


def test_spend_charts_show_the_top_ten_concentration_with_tables_and_csv() -> None:
    import csv
    import io

    from services.console.placements import spend_charts

    providers = [{"provider_id": f"p{i:02}", "spend_pence": 1000 * (i + 1)} for i in range(12)]  # p11 spends most
    spend = {"from": "2026-01-01", "to": "2026-12-31", "total_pence": sum(p["spend_pence"] for p in providers),
             "by_borough": [{"borough": "croydon", "spend_pence": 50000}, {"borough": "lambeth", "spend_pence": 28000}],
             "by_provider": providers, "by_stream": [{"stream": "social_care", "spend_pence": 78000}]}
    by_provider, by_borough, by_stream = spend_charts(spend)
    assert [r[0] for r in by_provider.rows][:3] == ["p11", "p10", "p09"] and len(by_provider.rows) == 11
    assert by_provider.rows[-1] == ["2 other providers", 1000 + 2000]
    top_ten = sum(1000 * (i + 1) for i in range(2, 12))
    assert f"{100 * top_ten / 78000:.1f}%" in by_provider.note
    assert by_borough.rows == [["croydon", 50000], ["lambeth", 28000]] and by_stream.labels == ["social care"]
    assert list(csv.reader(io.StringIO(by_borough.csv())))[0] == ["borough", "spend (pence)"]
    assert "svg" in str(by_provider.svg())
    empty = spend_charts({"from": "2026-01-01", "to": "2026-01-31", "total_pence": 0, "by_provider": []})
    assert all(chart.empty for chart in empty) and empty[0].note == ""
