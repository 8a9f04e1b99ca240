"""The placement service's commands, its reactions to the events it consumes, and its queries.

A reaction runs in the consumer's transaction (it gets `conn`); a command in `runtime.command`'s.
The placement's events (`placematch.placement`) and its view commit together. Tenancy as
everywhere: a borough acts on and sees its own placements, a provider its own, a commissioner
and an auditor all of them; another tenant's placement is "not found", never "forbidden".
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import date, timedelta
from fractions import Fraction
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.aggregate import NewEvent
from shared.auth import Principal
from shared.errors import Forbidden, NotFound, RuleViolation
from shared.events import Envelope
from shared.inputs import EARLIEST_DATE, years_ahead
from shared.service import ServiceRuntime
from shared.store import EventStore
from shared.vocabulary import now_utc

from . import projections as views
from .domain import (
    REVIEW_NOTICE_DAYS,
    CollapseReason,
    Contribution,
    Ending,
    EndReason,
    FeeDecision,
    NextStep,
    OffFrameworkReason,
    OutcomeRating,
    Placement,
    awarded_placement_id,
    pence,
    placement_notifications,
    spend,
)

READERS = ("commissioner", "auditor")
TOPIC = "placement"


class Recorder(Protocol):
    """What a reaction needs of its runtime (`ServiceRuntime` is one; replay builds another)."""

    store: EventStore

    def topic(self, short: str) -> str: ...


def today() -> date:
    return now_utc().date()


def _missing(placement_id: str) -> NotFound:
    return NotFound(f"placement {placement_id} not found", field="placement_id")


def sees(who: Principal, borough: str, provider_id: str) -> bool:
    if who.role in READERS:
        return True
    if who.role == "borough":
        return borough == who.tenant
    if who.role == "provider":
        return provider_id == who.tenant
    return False


def _owned(placement: Placement, who: Principal, *roles: str) -> None:
    """`who` may see the placement (else 404) and act on it in one of `roles` (else 403)."""
    if not placement.opened or not sees(who, placement.borough, placement.provider_id):
        raise _missing(placement.id)
    if who.role not in roles:
        raise Forbidden(f"role {who.role!r} may not do this to a placement; needs {' or '.join(roles)}",
                        field="Authorization")


async def _project(conn: AsyncConnection, placement: Placement, envelopes: list[Envelope]) -> dict[str, Any]:
    return await views.project(conn, placement.id, [(e.type, e.data) for e in envelopes])


async def notify(runtime: Recorder, conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
    """The notification requests the recorded events call for (placematch.notifications), in the
    same transaction: the borough and the provider hear of starts, endings, reviews due, fee
    changes and collapses exactly once."""
    requests = [r for e in envelopes for r in placement_notifications(e.id, e.subject, e.type, e.data)]
    if requests:
        await runtime.store.append_many(conn, [(r.notification_id, None, [r.as_event()]) for r in requests],
                                        topic=runtime.topic("notifications"))


def _projector(runtime: Recorder) -> Any:
    """`project` of every command: the view, then the notifications."""
    async def project(conn: AsyncConnection, placement: Placement, envelopes: list[Envelope]) -> dict[str, Any]:
        view = await _project(conn, placement, envelopes)
        await notify(runtime, conn, envelopes)
        return view
    return project


async def _run(runtime: ServiceRuntime, placement_id: str, who: Principal, roles: tuple[str, ...],
               decide: Any) -> dict[str, Any]:
    """A command on one placement: tenancy first, then the domain rule, then the view."""
    def checked(conn: AsyncConnection, placement: Placement) -> list[NewEvent]:
        _owned(placement, who, *roles)
        events: list[NewEvent] = decide(placement)
        return events

    placement, _ = await runtime.command(Placement, placement_id, checked, topic=TOPIC, project=_projector(runtime))
    async with runtime.db.read() as conn:
        view = await views.get_view(conn, placement.id)
    assert view is not None
    return redacted(view, who)


def redacted(view: dict[str, Any], who: Principal) -> dict[str, Any]:
    """A provider sees neither the borough's reasons for choosing it over a higher-ranked offer (the
    award's justification) nor whom the borough turned to after its award collapsed."""
    if who.role != "provider":
        return view
    shown = {**view, "justification": None}
    if view.get("collapse"):
        shown["collapse"] = {k: v for k, v in view["collapse"].items()
                             if k not in ("next_offer_id", "next_provider_id", "top_remaining_offer_id",
                                          "justification")}
    return shown


# --------------------------------------------------------------------------- reactions: referral, matching

async def on_referral_raised(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    await views.save_referral_facts(conn, event.subject, event.data)


async def on_referral_amended(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    referral = event.data.get("referral")
    if isinstance(referral, dict):
        await views.save_referral_facts(conn, event.subject, referral)


async def on_shortlist_ranked(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    await views.save_shortlist(conn, str(event.data.get("referral_id") or event.subject),
                               list(event.data["entries"]))


async def on_placement_awarded(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    """The award opens the placement, with the referral's outcomes and needs as last raised or amended."""
    data = event.data
    placement_id = awarded_placement_id(event.subject, str(data["offer_id"]))
    placement = await runtime.store.load(Placement, placement_id, conn)
    facts = await views.get_referral_facts(conn, event.subject)
    events = placement.open_from_award(data, event.subject, facts, str(data.get("awarded_at") or event.time))
    if not events:
        return
    envelopes = await runtime.store.append(conn, placement_id, placement.version, events,
                                           topic=runtime.topic(TOPIC))
    await views.project(conn, placement_id, [(e.type, e.data) for e in envelopes])


# --------------------------------------------------------------------------- commands

async def open_off_framework(runtime: ServiceRuntime, *, who: Principal, provider_id: str | None,
                             provider_name: str | None, weekly_fee_pence: int, planned_start: date,
                             primary_need: str | None, placement_type: str | None, outcomes: Sequence[str],
                             needs_profile: dict[str, int], reason: OffFrameworkReason, note: str | None,
                             referral_id: str | None) -> dict[str, Any]:
    placement_id = str(uuid.uuid4())

    def decide(conn: AsyncConnection, placement: Placement) -> list[NewEvent]:
        return placement.open_off_framework(
            borough=who.tenant, provider_id=provider_id, provider_name=provider_name,
            weekly_fee_pence=weekly_fee_pence, planned_start=planned_start, primary_need=primary_need,
            placement_type=placement_type, outcomes=outcomes, needs_profile=needs_profile, reason=reason,
            note=note, referral_id=referral_id, today=today(), opened_at=now_utc().strftime("%Y-%m-%dT%H:%M:%SZ"))

    await runtime.command(Placement, placement_id, decide, topic=TOPIC, project=_projector(runtime))
    return await get_placement(runtime, who=who, placement_id=placement_id)


async def start(runtime: ServiceRuntime, *, who: Principal, placement_id: str, started_on: date) -> dict[str, Any]:
    return await _run(runtime, placement_id, who, ("borough", "provider"),
                      lambda p: p.start(started_on, today()))


async def end(runtime: ServiceRuntime, *, who: Principal, placement_id: str, ended_on: date, ending: Ending,
              reason: EndReason, note: str | None) -> dict[str, Any]:
    return await _run(runtime, placement_id, who, ("borough", "provider"),
                      lambda p: p.end(ended_on, ending, reason, note, today()))


async def collapse(runtime: ServiceRuntime, *, who: Principal, placement_id: str, reason: CollapseReason,
                   note: str | None, next_step: NextStep, next_offer_id: str | None,
                   justification: str | None) -> dict[str, Any]:
    async def decide(conn: AsyncConnection, placement: Placement) -> list[NewEvent]:
        _owned(placement, who, "borough")
        shortlist = await views.get_shortlist(conn, placement.referral_id) if placement.referral_id else None
        return placement.collapse(reason, note, next_step, next_offer_id, justification, shortlist)

    await runtime.command(Placement, placement_id, decide, topic=TOPIC, project=_projector(runtime))
    return await get_placement(runtime, who=who, placement_id=placement_id)


async def agree_funding(runtime: ServiceRuntime, *, who: Principal, placement_id: str,
                        contributions: Sequence[Contribution], agreed_from: date, agreed_until: date,
                        review_due: date) -> dict[str, Any]:
    return await _run(runtime, placement_id, who, ("borough", "commissioner"),
                      lambda p: p.agree_funding(contributions, agreed_from, agreed_until, review_due,
                                                who.actor, today()))


async def review(runtime: ServiceRuntime, *, who: Principal, placement_id: str, reviewed_on: date,
                 ratings: Sequence[OutcomeRating], needs_profile: dict[str, int], continues: bool,
                 next_review_due: date | None, note: str | None) -> dict[str, Any]:
    review_id = str(uuid.uuid4())
    return await _run(runtime, placement_id, who, ("borough",),
                      lambda p: p.review(review_id=review_id, reviewed_on=reviewed_on, ratings=ratings,
                                         needs_profile=needs_profile, continues=continues,
                                         next_review_due=next_review_due, note=note, today=today()))


async def request_fee_change(runtime: ServiceRuntime, *, who: Principal, placement_id: str, weekly_fee_pence: int,
                             effective_from: date, reason: str) -> dict[str, Any]:
    change_id = str(uuid.uuid4())
    return await _run(runtime, placement_id, who, ("provider",),
                      lambda p: p.request_fee_change(change_id=change_id, weekly_fee_pence=weekly_fee_pence,
                                                     effective_from=effective_from, reason=reason, today=today()))


async def decide_fee_change(runtime: ServiceRuntime, *, who: Principal, placement_id: str, change_id: str,
                            decision: FeeDecision, weekly_fee_pence: int | None, note: str | None) -> dict[str, Any]:
    return await _run(runtime, placement_id, who, ("borough",),
                      lambda p: p.decide_fee_change(change_id=change_id, decision=decision,
                                                    weekly_fee_pence=weekly_fee_pence, note=note))


# --------------------------------------------------------------------------- the review-due task

async def notice_reviews_due(runtime: ServiceRuntime, on: date | None = None) -> int:
    """`placement-review-due` for every started placement whose review is due within 14 days or
    overdue, once per due date (the aggregate refuses a second notice). Returns how many."""
    day = on or today()
    async with runtime.db.read() as conn:
        due = await views.list_views(conn, due_by=(day + timedelta(days=REVIEW_NOTICE_DAYS)).isoformat())
    noticed = 0
    for view in due:
        _, envelopes = await runtime.command(Placement, view["id"], lambda c, p: p.notice_review_due(day),
                                             topic=TOPIC, project=_projector(runtime))
        noticed += len(envelopes)
    return noticed


async def review_due_task(runtime: ServiceRuntime) -> None:
    """Background task: look for reviews coming due every `placement_review_check_seconds`."""
    interval = runtime.settings.placement_review_check_seconds
    while True:
        await notice_reviews_due(runtime)
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- queries

async def get_placement(runtime: ServiceRuntime, *, who: Principal, placement_id: str) -> dict[str, Any]:
    async with runtime.db.read() as conn:
        view = await views.get_view(conn, placement_id)
    if view is None or not sees(who, view["borough"], view["provider_id"]):
        raise _missing(placement_id)
    return redacted(view, who)


def _scope(who: Principal) -> dict[str, str | None]:
    return {"borough": who.tenant if who.role == "borough" else None,
            "provider_id": who.tenant if who.role == "provider" else None}


async def list_placements(runtime: ServiceRuntime, *, who: Principal, status: str | None,
                          referral_id: str | None) -> list[dict[str, Any]]:
    async with runtime.db.read() as conn:
        found = await views.list_views(conn, status=status, referral_id=referral_id, **_scope(who))
    return [redacted(v, who) for v in found]


async def reviews_due(runtime: ServiceRuntime, *, who: Principal, within_days: int) -> list[dict[str, Any]]:
    day = today()
    async with runtime.db.read() as conn:
        found = await views.list_views(conn, due_by=(day + timedelta(days=within_days)).isoformat(), **_scope(who))
    rows = [{"placement_id": v["id"], "borough": v["borough"], "provider_id": v["provider_id"],
             "referral_id": v["referral_id"], "review_due": v["review_due"],
             "overdue": v["review_due"] < day.isoformat(),
             "days_left": (date.fromisoformat(v["review_due"]) - day).days} for v in found]
    return sorted(rows, key=lambda r: (r["review_due"], r["placement_id"]))


async def spend_between(runtime: ServiceRuntime, *, who: Principal, first: date, last: date) -> dict[str, Any]:
    """Spend over `first`..`last` (both included), by borough, provider and stream, for what `who` sees."""
    latest = years_ahead(today(), 10)
    for name, day in (("from", first), ("to", last)):
        if not EARLIEST_DATE <= day <= latest:
            raise RuleViolation(f"'{name}' must be between {EARLIEST_DATE} and {latest}", field=name,
                                rule="plausible_date")
    if last < first:
        raise RuleViolation("'to' must not be before 'from'", field="to", rule="after_from")
    if (last - first).days > 366 * 10:
        raise RuleViolation("at most ten years at a time", field="to", rule="max_range")
    async with runtime.db.read() as conn:
        found = await views.list_views(conn, **_scope(who))
    groups: dict[str, dict[str, Fraction]] = {"borough": {}, "provider": {}, "stream": {}, "off_framework": {}}
    total = Fraction(0)
    for view in found:
        by_stream = spend(views.spend_facts(view), first, last)
        amount = sum(by_stream.values(), Fraction(0))
        if not amount:
            continue
        total += amount
        for group, key in (("borough", view["borough"]), ("provider", view["provider_id"]),
                           ("off_framework", "off_framework" if view["off_framework"] else "framework")):
            groups[group][key] = groups[group].get(key, Fraction(0)) + amount
        for stream, part in by_stream.items():
            groups["stream"][stream] = groups["stream"].get(stream, Fraction(0)) + part

    def rows(name: str, key: str) -> list[dict[str, Any]]:
        return [{key: k, "spend_pence": pence(v)} for k, v in sorted(groups[name].items())]

    return {"from": first.isoformat(), "to": last.isoformat(), "total_pence": pence(total),
            "by_borough": rows("borough", "borough"), "by_provider": rows("provider", "provider_id"),
            "by_stream": rows("stream", "stream"), "by_framework": rows("off_framework", "framework")}
