"""Wiring of the matching service: `create_app(settings)`."""
from __future__ import annotations

from fastapi import FastAPI

from shared.service import ServiceRuntime, create_service_app
from shared.settings import Settings

from . import api
from .handlers import Matching

DESCRIPTION = """Eligibility, ranked shortlists and market insights.

Consumes `placematch.enrolment` and `placematch.referral`; publishes decisions to
`placematch.matching`, notification requests to `placematch.notifications` and decision records
with their inputs to `placematch.audit`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime("matching", settings, publishes=["matching", "notifications", "audit"])
    matching = Matching(runtime.store, runtime.topic)
    # matching's consumer is its only steady writer: a backlog is worked off 20 events a transaction
    runtime.consume(["enrolment", "referral"], matching.handle, batch_size=20)
    app = create_service_app(runtime, [api.router], title="placematch matching", description=DESCRIPTION)
    app.state.matching = matching
    return app
