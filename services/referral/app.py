"""Wiring of the referral service: store, outbox to placematch.referral, consumers, deadline closer."""
from __future__ import annotations

from fastapi import FastAPI

from services.referral import api, deadlines, handlers
from services.referral.personal import SealedAnswers, SealingEventStore
from shared.service import ConsumerSpec, ServiceRuntime, create_service_app
from shared.settings import Settings

DESCRIPTION = """Boroughs raise referrals; invited providers offer or decline; the borough awards.

A borough reads only its own referrals. An invited provider reads a redacted view (no `child_ref`,
age instead of birth date, location to district) and only its own offers. Every write accepts an
`Idempotency-Key` header. Errors are RFC 9457 problem+json with `field` and `rule`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime(
        "referral",
        settings,
        publishes=["referral"],
        # ~25 consumed events per referral (invitations, shortlists, audit and notification records):
        # a backlog is worked off 20 events a transaction
        consumes=[ConsumerSpec(["matching", "enrolment", "audit", "notifications"], handlers.handle, batch_size=20)],
        tasks=[deadlines.close_passed_deadlines],
        store_class=SealingEventStore,
        answers=SealedAnswers(),
    )
    return create_service_app(runtime, [api.router], title="placematch referral", description=DESCRIPTION)
