"""Wiring of the enrolment service: `create_app(settings)`."""
from __future__ import annotations

from fastapi import FastAPI

from shared.service import ServiceRuntime, create_service_app
from shared.settings import Settings

from . import api, handlers

DESCRIPTION = """Providers apply to the Dynamic Purchasing System, are inspected and quality-scored,
approved, and suspended at once when a safeguarding concern arises. Every change is an event on
`placematch.enrolment`; `GET /providers/{id}/history` is the audit trail."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime("enrolment", settings, publishes=["enrolment"], consumes=handlers.consumers)
    return create_service_app(runtime, [api.router], title="placematch enrolment", description=DESCRIPTION)
