"""Notification's settings are its own (`services/notification/settings.py`), under the same
`PLACEMATCH_*` names as before; the core `Settings` no longer carries them."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from services.notification.settings import NotificationSettings
from shared.settings import Settings

MOVED = ("webhook_allow_private", "webhook_timeout_seconds", "webhook_max_attempts", "webhook_retry_base_seconds",
         "secrets_key", "smtp_host", "smtp_port", "smtp_username", "smtp_password", "smtp_starttls", "email_sender",
         "email_enabled")


def test_the_core_settings_know_no_notification_setting() -> None:
    assert not set(MOVED) & set(Settings.model_fields)
    assert set(MOVED) <= set(NotificationSettings.model_fields)


def test_read_from_the_same_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLACEMATCH_SMTP_HOST", "mail.example")
    monkeypatch.setenv("PLACEMATCH_SMTP_PORT", "2525")
    monkeypatch.setenv("PLACEMATCH_WEBHOOK_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("PLACEMATCH_WEBHOOK_SECRET_GRACE_SECONDS", "60")
    monkeypatch.setenv("PLACEMATCH_EMAIL_ENABLED", "false")
    settings = NotificationSettings()
    assert (settings.smtp_host, settings.smtp_port, settings.email_enabled) == ("mail.example", 2525, False)
    assert settings.retry_policy().max_attempts == 3 and settings.secret_grace == timedelta(seconds=60)


def test_over_core_settings_the_rest_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLACEMATCH_WEBHOOK_ALLOW_PRIVATE", "true")
    settings = NotificationSettings.of(Settings(data_dir=tmp_path, topic_prefix="t-"))
    assert (settings.data_dir, settings.topic_prefix, settings.webhook_allow_private) == (tmp_path, "t-", True)
    own = NotificationSettings(data_dir=tmp_path, webhook_allow_private=False)
    assert NotificationSettings.of(own) is own


def test_the_secrets_key_is_never_shown() -> None:
    assert "sekrit" not in repr(NotificationSettings(secrets_key="sekrit"))
