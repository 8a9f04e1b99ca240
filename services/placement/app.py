"""Wiring of the placement service: `create_app(settings)`."""
from __future__ import annotations

from fastapi import FastAPI

from shared.service import ServiceRuntime, create_service_app
from shared.settings import Settings

from . import api, handlers, service

DESCRIPTION = """Placements from award to ending: lifecycle, funding, reviews, fee changes and spend.

Consumes `placematch.referral` (referrals' outcomes and needs, awards) and `placematch.matching`
(shortlists, for an award's collapse); publishes the placements' events to `placematch.placement`
and notification requests (starts, endings, reviews due, fee changes, collapses) to
`placematch.notifications`."""

PORT_OFFSET = 5
"""`placematch up` puts this service on base port + 5 (8005)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime("placement", settings, publishes=[service.TOPIC, "notifications"],
                             consumes=handlers.consumers, tasks=[service.review_due_task])
    return create_service_app(runtime, [api.router], title="placematch placement", description=DESCRIPTION)
