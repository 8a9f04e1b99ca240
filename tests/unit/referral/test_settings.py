"""ReferralSettings: the shared settings plus the deadline closer's pace, from the same variable."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.referral.settings import ReferralSettings
from shared.settings import Settings


def test_the_deadline_pace_is_referral_s_own_and_read_from_the_same_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "deadline_check_seconds" not in Settings.model_fields
    monkeypatch.setenv("PLACEMATCH_DEADLINE_CHECK_SECONDS", "0.25")
    shared = Settings(data_dir=tmp_path, relay_poll_seconds=0.1)
    own = ReferralSettings.of(shared)
    assert own.deadline_check_seconds == 0.25 and own.data_dir == tmp_path and own.relay_poll_seconds == 0.1
    assert ReferralSettings.of(own) is own
    monkeypatch.delenv("PLACEMATCH_DEADLINE_CHECK_SECONDS")
    assert ReferralSettings.of(None).deadline_check_seconds == 5.0
