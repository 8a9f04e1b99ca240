"""README.md stays true to the code: every setting documented, every CLI command listed."""
from __future__ import annotations

from pathlib import Path

from services.cli import app

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    from services.matching.settings import MatchingSettings
    from services.notification.settings import NotificationSettings
    from services.referral.settings import ReferralSettings

    for name in [*NotificationSettings.model_fields, *MatchingSettings.model_fields, *ReferralSettings.model_fields]:
        assert f"`PLACEMATCH_{name.upper()}`" in README, f"PLACEMATCH_{name.upper()} missing from README"


def test_every_command_is_documented() -> None:
    for command in app.registered_commands:
        name = command.name or command.callback.__name__
        assert f"placematch {name}" in README, f"placematch {name} missing from README"


def test_two_commands_come_first() -> None:
    assert README.index("make run") < README.index("## A five-minute tour")
    assert "make test" in README.split("## A five-minute tour")[0]
