"""The README's console section names every console setting."""
from __future__ import annotations

from pathlib import Path

from services.console.settings import ConsoleSettings
from shared.settings import Settings

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()


def test_every_console_setting_is_in_the_readme() -> None:
    own = set(ConsoleSettings.model_fields) - set(Settings.model_fields)
    assert own
    for name in own:
        assert f"`PLACEMATCH_{name.upper()}`" in README, f"PLACEMATCH_{name.upper()} missing from README"
