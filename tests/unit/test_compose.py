"""compose.yaml cannot be run here (no Docker engine), so check that it refers to real things."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml

from services import SERVICES, port_for
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# the contract
DESIGN_PORTS = {"enrolment": 8001, "referral": 8002, "matching": 8003, "notification": 8004, "placement": 8005}
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_every_service_is_in_compose_with_its_port_and_command() -> None:
    services = COMPOSE["services"]
    for name in SERVICES:
        spec = services[name]
        assert spec["command"] == ["serve", name]
        port = DESIGN_PORTS[name]
        assert port_for(name, Settings(base_port=8000, port=None).base_port) == port
        assert spec["ports"] == [f"{port}:{port}"]
        assert spec["environment"]["PLACEMATCH_PORT"] == str(port)
        assert spec["environment"]["PLACEMATCH_DATABASE_URL"].endswith(f"/{name}")
        assert importlib.import_module(f"services.{name}.app").create_app


def _settings_of(service: str) -> set[str]:
    """The core settings' names, and those of a service's own `services/<service>/settings.py`."""
    names = set(Settings.model_fields)
    try:
        module = importlib.import_module(f"services.{service}.settings")
    except ModuleNotFoundError:
        return names
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Settings):
            names |= set(value.model_fields)
    return names


def test_environment_names_are_real_settings() -> None:
    for name, spec in COMPOSE["services"].items():
        fields = {f"PLACEMATCH_{setting.upper()}" for setting in _settings_of(name)}
        for variable in spec.get("environment", {}):
            if variable.startswith("PLACEMATCH_"):
                assert variable in fields, f"{name}: {variable} is not a setting"


def test_dependencies_exist_and_are_health_gated() -> None:
    services = COMPOSE["services"]
    for name in SERVICES:
        for dependency, condition in services[name]["depends_on"].items():
            assert dependency in services
            assert condition == {"condition": "service_healthy"}
            assert "healthcheck" in services[dependency]


def test_build_and_init_files_exist() -> None:
    for name in SERVICES:
        build = COMPOSE["services"][name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    for volume in COMPOSE["services"]["postgres"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).is_file()
    init = (ROOT / "deploy/postgres/init-databases.sh").read_text()
    for name in SERVICES:
        assert name in init


def test_dockerfile_runs_as_non_root_with_a_healthcheck_and_the_cli() -> None:
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/health" in dockerfile
    assert 'ENTRYPOINT ["placematch"]' in dockerfile
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'placematch\s*=\s*"services\.cli:main"', pyproject)
