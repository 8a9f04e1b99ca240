"""Enrolment's commands and queries.

Every command runs in one transaction through `runtime.command` (shared/commands.py): load the
provider, decide (the `Provider` aggregate), append to `placematch.enrolment`'s outbox, project the
providers list (`projections.update_provider_view`), retried from the start on a concurrent append.
The answer is the provider as changed, never a read-back. Its one reaction (`on_placement_event`)
takes the provider's placements in from placematch.placement, in the consumer's transaction.

One active provider per Ofsted URN is a service rule over all providers: `apply` looks the URN up
first (a clear 409 naming the provider already enrolled), and applications that pass that look-up
at the same time are settled by the read model's partial unique index
(`projections.ACTIVE_URN_INDEX`), whose refusal rolls the loser's whole transaction back, its event
included, and is answered with the same 409.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared import context
from shared.aggregate import NewEvent
from shared.auth import Principal
from shared.errors import InvalidTransition, NotFound
from shared.events import Envelope
from shared.service import ServiceRuntime
from shared.store import people_of
from shared.vocabulary import NeedCode, now_utc

from . import projections
from .domain import Provider, ProviderStatus
from .profile import Profile, ProfileChanges
from .scoring import Inspection, Outcomes

TOPIC = "enrolment"


def _today() -> date:
    """The day by which dates that can count are judged (inspections, academic years)."""
    return now_utc().date()


async def _execute(runtime: ServiceRuntime, provider_id: str,
                   decide: Callable[[Provider], list[NewEvent]]) -> dict[str, Any]:
    """One command on one provider, in one transaction; the provider's view as it now is."""
    def command(conn: AsyncConnection, provider: Provider) -> list[NewEvent]:
        return decide(provider)

    provider, _ = await runtime.command(Provider, provider_id, command, topic=TOPIC,
                                        project=projections.update_provider_view)
    return projections.provider_view(provider)


# --------------------------------------------------------------------------- commands

async def _active_with_urn(runtime: ServiceRuntime, urn: str) -> str | None:
    async with runtime.db.read() as conn:
        return await projections.active_provider_with_urn(conn, urn)


def _duplicate_urn(urn: str, existing: str | None) -> InvalidTransition:
    return InvalidTransition(f"a provider with URN {urn} is already enrolled "
                             f"({existing or 'just now, by another application'}); "
                             "update that one instead", field="urn", rule="duplicate_urn")


async def apply(runtime: ServiceRuntime, *, who: Principal | None, profile: Profile) -> dict[str, Any]:
    """A new provider applies (anyone may: without a token the applicant is the actor, `provider:<id>`)."""
    provider_id = str(uuid.uuid4())
    if who is None:
        context.actor.set(f"provider:{provider_id}")
    urn = profile.urn
    if (existing := await _active_with_urn(runtime, urn)) is not None:
        raise _duplicate_urn(urn, existing)
    try:
        return await _execute(runtime, provider_id, lambda p: p.submit_application(profile))
    except IntegrityError as error:  # the whole transaction rolled back: no event was recorded
        if not projections.violates_active_urn(error):
            raise
        raise _duplicate_urn(urn, await _active_with_urn(runtime, urn)) from None


async def record_inspection(runtime: ServiceRuntime, *, who: Principal, provider_id: str,
                            inspection: Inspection) -> dict[str, Any]:
    """Record a judgement; rescore; an approved provider whose judgement blocks is suspended with it."""
    today = _today()
    return await _execute(runtime, provider_id, lambda p: p.record_inspection(inspection, today=today))


async def record_outcomes(runtime: ServiceRuntime, *, who: Principal, provider_id: str,
                          outcomes: Outcomes) -> dict[str, Any]:
    """Record a year's outcome KPIs; rescore."""
    today = _today()
    return await _execute(runtime, provider_id, lambda p: p.record_outcomes(outcomes, today=today))


async def approve(runtime: ServiceRuntime, *, who: Principal, provider_id: str,
                  reason: str | None) -> dict[str, Any]:
    return await _execute(runtime, provider_id, lambda p: p.approve(reason))


async def reject(runtime: ServiceRuntime, *, who: Principal, provider_id: str, reason: str) -> dict[str, Any]:
    return await _execute(runtime, provider_id, lambda p: p.reject(reason))


async def suspend(runtime: ServiceRuntime, *, who: Principal, provider_id: str, reason: str) -> dict[str, Any]:
    return await _execute(runtime, provider_id, lambda p: p.suspend(reason))


async def reinstate(runtime: ServiceRuntime, *, who: Principal, provider_id: str,
                    reason: str | None) -> dict[str, Any]:
    return await _execute(runtime, provider_id, lambda p: p.reinstate(reason))


async def update(runtime: ServiceRuntime, *, who: Principal, provider_id: str,
                 changes: ProfileChanges) -> dict[str, Any]:
    """Change profile fields (which ones `who` may change is settled by the API); nothing is
    recorded when nothing changes."""
    return await _execute(runtime, provider_id, lambda p: p.update(changes))


# --------------------------------------------------------------------------- reactions

async def on_placement_event(runtime: ServiceRuntime, conn: AsyncConnection, event: Envelope) -> None:
    """A placement of one of our providers opened, started, ended, collapsed or was reviewed: its
    record on the provider (once per placement and state), the vacancies it takes or returns, and the
    rescoring it causes. The placement of a provider not enrolled here (`off-framework:<name>`) is
    not ours to count."""
    provider_id = event.data.get("provider_id")
    if not isinstance(provider_id, str) or provider_id.startswith("off-framework:"):
        return
    provider = await runtime.store.load(Provider, provider_id, conn)
    events = provider.record_placement(event.type, event.subject, event.data, event.id)
    if not events:
        return
    envelopes = await runtime.store.append(conn, provider_id, provider.version, events, topic=runtime.topic(TOPIC))
    provider.mutate(events)
    await projections.update_provider_view(conn, provider, envelopes)


# --------------------------------------------------------------------------- queries

async def get_provider(runtime: ServiceRuntime, *, provider_id: str) -> dict[str, Any]:
    """One provider, from its event stream (the source of truth)."""
    provider = await runtime.store.load(Provider, provider_id)
    if not provider.exists:
        raise NotFound(f"no provider {provider_id}", field="provider_id")
    return projections.provider_view(provider)


async def history(runtime: ServiceRuntime, *, provider_id: str, who: Principal) -> dict[str, Any]:
    """The provider's events in order, and `people`: who each `actorid` is (the audit record, never
    the events). A commissioner or auditor sees every name; a provider its own staff's only."""
    async with runtime.db.read() as conn:
        envelopes = await runtime.store.read_stream(provider_id, conn)
        if not envelopes:
            raise NotFound(f"no provider {provider_id}", field="provider_id")
        people = await people_of(conn, (e.actorid for e in envelopes))
    if who.role not in ("commissioner", "auditor"):
        people = {sub: p for sub, p in people.items() if p["actor"] == who.actor}
    return {"provider_id": provider_id, "events": [e.to_dict() for e in envelopes], "people": people}


async def list_providers(runtime: ServiceRuntime, *, status: ProviderStatus | None, lot: NeedCode | None,
                         limit: int, offset: int) -> dict[str, Any]:
    async with runtime.db.read() as conn:
        items, total = await projections.list_providers(
            conn, status=None if status is None else status.value, lot=None if lot is None else lot.value,
            limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}
