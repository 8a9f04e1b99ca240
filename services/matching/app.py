"""Wiring of the matching service: `create_app(settings)`."""
from __future__ import annotations

from fastapi import FastAPI

from shared.service import ServiceRuntime, create_service_app
from shared.settings import Settings

from . import api, handlers
from .settings import MatchingSettings

DESCRIPTION = """Eligibility, ranked shortlists and market insights.

Consumes `placematch.enrolment` and `placematch.referral`; publishes decisions to
`placematch.matching`, notification requests to `placematch.notifications` and decision records
with their inputs to `placematch.audit`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = MatchingSettings.of(settings)
    runtime = ServiceRuntime("matching", settings, publishes=["matching", "notifications", "audit"],
                             consumes=handlers.consumers)
    return create_service_app(runtime, [api.router], title="placematch matching", description=DESCRIPTION)
