"""Notification's settings: the core `Settings` plus webhook delivery, signing secrets and email
(`PLACEMATCH_*` environment variables, as before they moved here from `shared/settings.py`)."""
from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from shared.settings import Settings

from .retries import RetryPolicy
from .subscriptions import DisablePolicy


class NotificationSettings(Settings):
    webhook_allow_private: bool = Field(False, description="Allow webhook URLs on private/loopback addresses.")
    webhook_timeout_seconds: float = 10.0
    webhook_max_attempts: int = 8
    webhook_retry_base_seconds: float = 5.0
    webhook_retry_factor: float = Field(6.0, description="Backoff multiplier between attempts.")
    webhook_retry_max_delay_seconds: float = Field(6 * 3600, description="Longest wait between attempts.")
    webhook_retry_jitter: float = Field(0.2, description="Spread of each wait, +/- this fraction.")
    webhook_disable_after_seconds: float = Field(
        5 * 24 * 3600, description="An endpoint failing without a success this long is disabled.")
    webhook_secret_grace_seconds: float = Field(
        24 * 3600, description="After a rotation the previous secret also signs for this long.")
    secrets_key: str | None = Field(
        None, description="Fernet key(s) sealing webhook signing secrets (`openssl rand -base64 32`; several, "
                          "comma-separated: the first seals, all open). Required by `placematch serve`; unset "
                          "elsewhere = a key generated once in <data_dir>/secrets.key.", repr=False)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    email_sender: str = "placematch <no-reply@placematch.local>"
    email_enabled: bool = True
    email_always: bool = Field(False, description="Email every notification, not only when no webhook takes it.")
    delivery_poll_seconds: float = Field(0.5, description="How often the dispatcher looks for due deliveries.")
    delivery_concurrency: int = Field(10, description="Attempts in flight at once.")

    @classmethod
    def of(cls, settings: Settings | None) -> NotificationSettings:
        """These settings over the core `settings` given (the rest from the environment)."""
        if isinstance(settings, NotificationSettings):
            return settings
        if settings is None:
            return cls()
        return cls(**settings.model_dump(exclude_unset=True))

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.webhook_max_attempts,
            base_delay=timedelta(seconds=self.webhook_retry_base_seconds),
            factor=self.webhook_retry_factor,
            max_delay=timedelta(seconds=self.webhook_retry_max_delay_seconds),
            jitter=self.webhook_retry_jitter,
        )

    def disable_policy(self) -> DisablePolicy:
        return DisablePolicy(failing_for=timedelta(seconds=self.webhook_disable_after_seconds))

    @property
    def secret_grace(self) -> timedelta:
        return timedelta(seconds=self.webhook_secret_grace_seconds)
