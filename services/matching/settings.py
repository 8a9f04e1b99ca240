"""Matching's settings: the shared `Settings` plus the knobs only this service has."""
from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class MatchingSettings(Settings):
    insights_min_providers: int = Field(
        5, ge=3,
        description="matching: Fewest distinct providers with standing offers behind a fee figure providers see.")

    @classmethod
    def of(cls, settings: Settings | None) -> MatchingSettings:
        """`settings` as matching's: the fields it was given kept, matching's own from the environment."""
        if isinstance(settings, MatchingSettings):
            return settings
        if settings is None:
            return cls()
        return cls(**settings.model_dump(exclude_unset=True))
