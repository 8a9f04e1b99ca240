"""Wiring of the matching service: `create_app(settings)`."""
from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events import Envelope
from shared.service import ConsumerSpec, ServiceRuntime, create_service_app
from shared.settings import Settings

from . import api
from .handlers import Matching

DESCRIPTION = """Eligibility, ranked shortlists and market insights.

Consumes `placematch.enrolment` and `placematch.referral`; publishes decisions to
`placematch.matching`, notification requests to `placematch.notifications` and decision records
with their inputs to `placematch.audit`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    matching: Matching | None = None

    async def handle(conn: AsyncConnection, event: Envelope) -> None:
        """The consumer is built before the store it needs exists; bind late."""
        assert matching is not None
        await matching.handle(conn, event)

    runtime = ServiceRuntime(
        "matching", settings,
        publishes=["matching", "notifications", "audit"],
        consumes=[ConsumerSpec(["enrolment", "referral"], handle)],
    )
    matching = Matching(runtime.store, runtime.topic)
    app = create_service_app(runtime, [api.router], title="placematch matching", description=DESCRIPTION)
    app.state.matching = matching
    return app
