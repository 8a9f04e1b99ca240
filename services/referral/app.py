"""Wiring of the referral service: `create_app(settings)`."""
from __future__ import annotations

from fastapi import FastAPI

from shared.service import ServiceRuntime, create_service_app
from shared.settings import Settings

from . import api, deadlines, handlers
from .personal import SealedAnswers, SealingEventStore
from .settings import ReferralSettings

DESCRIPTION = """Boroughs raise referrals; invited providers offer or decline; the borough awards.

A borough reads only its own referrals. An invited provider reads a redacted view (no `child_ref`,
age instead of birth date, location to district) and only its own offers. Every write accepts an
`Idempotency-Key` header. Errors are RFC 9457 problem+json with `field` and `rule`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    runtime = ServiceRuntime("referral", ReferralSettings.of(settings), publishes=["referral", "notifications"],
                             consumes=handlers.consumers, tasks=[deadlines.close_passed_deadlines],
                             store_class=SealingEventStore, answers=SealedAnswers())
    return create_service_app(runtime, [api.router], title="placematch referral", description=DESCRIPTION)
