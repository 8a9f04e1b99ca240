"""Referral settings: the shared `Settings` plus the knobs only this service has."""
from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class ReferralSettings(Settings):
    deadline_check_seconds: float = Field(5.0, description="How often referral closes passed deadlines "
                                          "(PLACEMATCH_DEADLINE_CHECK_SECONDS).")

    @classmethod
    def of(cls, settings: Settings | None) -> ReferralSettings:
        """These settings from the shared ones (the environment fills in what they do not set)."""
        if isinstance(settings, ReferralSettings):
            return settings
        if settings is None:
            return cls()
        return cls(**settings.model_dump(exclude_unset=True))
