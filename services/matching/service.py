"""Matching's commands, its reactions to the events it consumes, and its queries.

Every decision is taken inside one transaction: a reaction runs in the consumer's (it gets `conn`),
the policy change in `runtime.command`'s. Read models, matching's own events (`placematch.matching`),
notification requests (`placematch.notifications`) and decision records (`placematch.audit`) commit
together with the processed-event id, so a redelivery changes nothing. Notification ids derive from
the consumed event's id, so they are stable across replays. Replay (`replay.py`) runs these same
functions over a fresh database.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.aggregate import NewEvent
from shared.auth import Principal
from shared.errors import NotFound
from shared.events import Envelope
from shared.service import ServiceRuntime
from shared.store import EventStore
from shared.vocabulary import NeedCode, NotificationRequest, format_score, now_utc

from . import projections as views
from .domain import (
    ReferralMatch,
    award_notifications,
    closed_unfilled_notification,
    decision_record,
    match_notifications,
    shortlist_notifications,
    suspension_notification,
)
from .eligibility import ReferralFacts
from .insights import fee_quartiles, market_insights, time_to_place
from .insights import insights as full_insights
from .ranking import POLICY_STREAM, Policy, RankingPolicy
from .ranking import rank as rank_offers
from .settings import MatchingSettings

POLICY_JOURNAL = "matching-policy"
"""Journal name under which policy changes take their place in matching's input order (replay)."""

READERS = ("commissioner", "auditor")
# Provider events after which a provider may newly qualify for open referrals.
WIDENING = ("provider-approved", "provider-reinstated", "provider-updated", "provider-vacancies-changed")
# Provider events after which shortlists holding its offers may change.
RERANKING = ("provider-suspended", "provider-reinstated", "provider-rescored", "provider-updated")


class Recorder(Protocol):
    """What a reaction needs of its runtime: the store it records in and the topics' names.
    `ServiceRuntime` is one; replay builds another over its fresh database."""

    store: EventStore

    def topic(self, short: str) -> str: ...


# --------------------------------------------------------------------------- recording

async def _notify(runtime: Recorder, conn: AsyncConnection, requests: list[NotificationRequest]) -> None:
    await runtime.store.append_many(conn, [(r.notification_id, None, [r.as_event()]) for r in requests],
                                    topic=runtime.topic("notifications"))


async def _audit(runtime: Recorder, conn: AsyncConnection, referral_id: str, record: dict[str, Any]) -> None:
    await runtime.store.append(conn, referral_id, None, [NewEvent("decision-recorded", record)],
                               topic=runtime.topic("audit"))


async def _policy(runtime: Recorder, conn: AsyncConnection) -> Policy:
    return (await runtime.store.load(RankingPolicy, POLICY_STREAM, conn)).current


# --------------------------------------------------------------------------- decisions

async def match(runtime: Recorder, conn: AsyncConnection, referral: ReferralFacts, *, trigger: str, cause: str,
                provider_id: str | None = None) -> None:
    """Match a referral against the whole directory, or reconsider one provider for it."""
    aggregate = await runtime.store.load(ReferralMatch, referral.referral_id, conn)
    if provider_id is None:
        directory = await views.provider_directory(conn)
        events, results = aggregate.match(referral, directory, trigger)
    else:
        provider = await views.get_provider(conn, provider_id)
        if provider is None:
            return
        directory = {provider_id: provider}
        events, result = aggregate.reconsider(referral, provider, trigger)
        results = [result]
    if not events:
        return
    envelopes = await runtime.store.append(conn, referral.referral_id, aggregate.version, events,
                                           topic=runtime.topic("matching"))
    data = events[0].data
    await views.record_eligibility(conn, referral.referral_id, results, data["invited"], trigger)
    await _notify(runtime, conn, match_notifications(cause, referral, data, directory))
    await _audit(runtime, conn, referral.referral_id, decision_record(
        "referral-matched", envelopes[0].id, providers=directory.values(), referral=referral,
        distances={r.provider_id: r.distance_km for r in results}, output=data))


async def rank(runtime: Recorder, conn: AsyncConnection, referral: ReferralFacts, *, cause: str,
               policy: Policy | None = None) -> None:
    """Recompute a referral's shortlist; record it when it changed."""
    aggregate = await runtime.store.load(ReferralMatch, referral.referral_id, conn)
    offers = await views.offers_for(conn, referral.referral_id)
    providers = await views.providers_by_id(conn, {o.provider_id for o in offers})
    policy = policy or await _policy(runtime, conn)
    events, _ = aggregate.rank(referral, offers, providers, policy)
    if not events:
        return
    envelopes = await runtime.store.append(conn, referral.referral_id, aggregate.version, events,
                                           topic=runtime.topic("matching"))
    data = events[0].data
    await views.save_shortlist(conn, data, envelopes[0].id)
    await _notify(runtime, conn, shortlist_notifications(cause, referral, data))
    await _audit(runtime, conn, referral.referral_id, decision_record(
        "shortlist-ranked", envelopes[0].id, providers=providers.values(), offers=offers,
        policy=policy, output=data))


async def rerank_all_open(runtime: Recorder, conn: AsyncConnection, *, policy: Policy, cause: str) -> None:
    """Re-rank every open referral that has offers, under `policy` (after a policy change)."""
    for referral in await views.open_referrals(conn):
        if await views.offers_for(conn, referral.referral_id):
            await rank(runtime, conn, referral, cause=cause, policy=policy)


# --------------------------------------------------------------------------- reactions: enrolment

async def on_provider_approved(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    """`provider-approved` / `provider-reinstated`: into the directory as approved, with its profile."""
    data = event.data
    await views.save_provider(conn, event.subject, "approved", data, data.get("quality_score"))
    if data.get("placements_held") is not None:
        await views.set_provider_held(conn, event.subject, int(data["placements_held"]))
    await _after_provider_change(runtime, conn, event)


async def on_provider_vacancies_changed(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    """A placement took or returned one of the provider's places: eligibility judges by vacancies
    from now on; a provider with a place free again is reconsidered for open referrals."""
    if not await views.set_provider_held(conn, event.subject, int(event.data["placements_held"])):
        return  # not in the directory until approved; approval carries the places held
    await _after_provider_change(runtime, conn, event)


async def on_provider_updated(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    existing = await views.get_provider(conn, event.subject)
    data = event.data
    profile = data.get("profile") or {}
    status = existing.status if existing else "applied"
    quality = data.get("quality_score", existing.quality_score if existing else None)
    await views.save_provider(conn, event.subject, status, profile, quality)
    await _after_provider_change(runtime, conn, event)


async def on_provider_suspended(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    if await views.get_provider(conn, event.subject) is None:
        return
    await views.set_provider_status(conn, event.subject, "suspended")
    provider = await views.get_provider(conn, event.subject)
    assert provider is not None
    await _notify(runtime, conn, [suspension_notification(event.id, provider, event.data.get("reason"))])
    await _after_provider_change(runtime, conn, event)


async def on_provider_rescored(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    if await views.get_provider(conn, event.subject) is None:
        return  # not in the directory until approved; approval carries the score
    await views.set_provider_quality(conn, event.subject, event.data.get("quality_score"))
    await _after_provider_change(runtime, conn, event)


async def on_provider_rejected(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    if await views.get_provider(conn, event.subject) is not None:
        await views.set_provider_status(conn, event.subject, "rejected")


async def _after_provider_change(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    """Invite the provider to open referrals it now qualifies for; re-rank shortlists holding its offers."""
    provider = await views.get_provider(conn, event.subject)
    if provider is None:
        return
    if event.type in WIDENING and provider.status == "approved":
        for referral in await views.open_referrals(conn):
            await match(runtime, conn, referral, trigger=event.type, cause=event.id, provider_id=event.subject)
    if event.type in RERANKING:
        policy = await _policy(runtime, conn)
        for referral in await views.open_referrals_with_offers_from(conn, event.subject):
            await rank(runtime, conn, referral, cause=event.id, policy=policy)


# --------------------------------------------------------------------------- reactions: referral

async def on_referral_raised(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    data = event.data
    raised_at = str(data.get("raised_at") or event.time)
    await views.save_referral(conn, event.subject, {k: v for k, v in data.items() if k != "raised_at"}, raised_at)
    found = await views.get_referral(conn, event.subject)
    assert found is not None
    await match(runtime, conn, found[0], trigger=event.type, cause=event.id)


async def on_referral_amended(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    found = await views.get_referral(conn, event.subject)
    if found is None:
        return  # an event for a referral we never saw raised: nothing to decide on
    _, row = found
    await views.save_referral(conn, event.subject, dict(event.data.get("referral") or {}), row.raised_at)
    if row.status == "open":
        amended = await views.get_referral(conn, event.subject)
        assert amended is not None
        await match(runtime, conn, amended[0], trigger=event.type, cause=event.id)


async def on_referral_withdrawn(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    if await views.get_referral(conn, event.subject) is not None:
        await views.set_referral(conn, event.subject, status="withdrawn")


async def on_offer_submitted(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    found = await views.get_referral(conn, event.subject)
    if found is None:
        return
    referral, row = found
    await views.add_offer(conn, event.subject, event.data)
    if row.status == "open":
        await rank(runtime, conn, referral, cause=event.id)


async def on_offer_withdrawn(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    found = await views.get_referral(conn, event.subject)
    if found is None:
        return
    referral, row = found
    await views.withdraw_offer(conn, str(event.data.get("offer_id")))
    if row.status == "open":
        await rank(runtime, conn, referral, cause=event.id)


async def on_invitation_declined(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    if await views.get_referral(conn, event.subject) is None:
        return
    data = event.data
    await views.record_decline(conn, event.subject, str(data.get("provider_id")), str(data.get("reason") or "other"))


async def on_placement_awarded(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    """The award into the referral's view; `offer.accepted` to the winner, `offer.not_selected` to the rest."""
    if await views.get_referral(conn, event.subject) is None:
        return
    data = event.data
    await views.set_referral(conn, event.subject, status="awarded", awarded_offer_id=data.get("offer_id"),
                             awarded_fee_pence=data.get("weekly_fee_pence"),
                             awarded_at=str(data.get("awarded_at") or event.time))
    offering: set[Any] = {data.get("provider_id")} | {o["provider_id"] for o in data.get("not_selected") or []}
    providers = await views.providers_by_id(conn, offering)
    await _notify(runtime, conn, award_notifications(event.id, event.subject, data, providers))


async def on_award_revoked(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    """The award collapsed before the start (referral's `award-revoked`): the collapsed offer no
    longer stands (it leaves the ranking as a withdrawn one does, so the next shortlist ranks exactly
    the offers standing again) and the referral is no longer awarded — open until the next event
    (`placement-awarded` for the next offer, or `referral-reopened`). Nothing is ranked here: the
    next award needs no shortlist, a reopening ranks (`on_referral_reopened`)."""
    if await views.get_referral(conn, event.subject) is None:
        return
    data = event.data
    await views.withdraw_offer(conn, str(data["offer_id"]))
    await views.set_referral(conn, event.subject, status="open", awarded_offer_id=None, awarded_fee_pence=None,
                             awarded_at=None)


async def on_referral_reopened(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    """After a collapse the referral takes offers again: open, its standing offers re-ranked (without
    the collapsed one) so that the borough can award, new offers ranked as for any open referral.
    The invitations stay as they were: the providers invited before are the ones whose offers stand."""
    found = await views.get_referral(conn, event.subject)
    if found is None:
        return
    referral, row = found
    await views.withdraw_offer(conn, str(event.data["collapsed_offer_id"]))
    if row.status == "awarded":  # the revocation was not seen (a log from before it existed)
        await views.set_referral(conn, event.subject, status="open", awarded_offer_id=None,
                                 awarded_fee_pence=None, awarded_at=None)
    elif row.status != "open":
        return  # withdrawn or closed: nothing to rank
    if await views.offers_for(conn, event.subject):
        await rank(runtime, conn, referral, cause=event.id)


async def on_referral_closed(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    """An open referral closes; closed unfilled, the borough is told."""
    found = await views.get_referral(conn, event.subject)
    if found is None:
        return
    referral, row = found
    unfilled = bool(event.data.get("unfilled")) or event.data.get("reason") == "unfilled"
    if row.status == "open":
        await views.set_referral(conn, event.subject, status="closed", closed_unfilled=unfilled)
        if unfilled:
            await _notify(runtime, conn, [closed_unfilled_notification(event.id, referral)])


# --------------------------------------------------------------------------- commands

async def change_policy(runtime: ServiceRuntime, *, who: Principal, quality_weight: Decimal, price_weight: Decimal,
                        min_quality: Decimal | None) -> Policy:
    """A new policy version; every open shortlist is re-ranked under it in the same transaction.
    Journalled, so replay feeds it back in the order matching took it with its consumed events."""
    def decide(conn: AsyncConnection, policy: RankingPolicy) -> list[NewEvent]:
        return policy.change(quality_weight, price_weight, min_quality)

    async def rerank(conn: AsyncConnection, policy: RankingPolicy, envelopes: list[Envelope]) -> None:
        await rerank_all_open(runtime, conn, policy=policy.current, cause=envelopes[0].id)

    policy, _ = await runtime.command(RankingPolicy, POLICY_STREAM, decide, topic="matching",
                                      journal=POLICY_JOURNAL, project=rerank)
    return policy.current


async def replay_policy_change(runtime: Recorder, conn: AsyncConnection, event: Envelope) -> None:
    """A recorded `policy-changed`, fed back by replay: appended as recorded, then re-ranked as
    `change_policy` did."""
    policy = await runtime.store.load(RankingPolicy, POLICY_STREAM, conn)
    events = [NewEvent(event.type, event.data)]
    await runtime.store.append(conn, POLICY_STREAM, policy.version, events)
    policy.mutate(events)
    await rerank_all_open(runtime, conn, policy=policy.current, cause=event.id)


# --------------------------------------------------------------------------- queries

async def _referral_for(conn: AsyncConnection, referral_id: str, who: Principal) -> tuple[ReferralFacts, Any]:
    """The referral if `who` may read it. Others' referrals are reported as not found, so that
    neither a borough nor a provider learns that a referral it may not see exists."""
    found = await views.get_referral(conn, referral_id)
    missing = NotFound(f"referral {referral_id} not found", field="referral_id")
    if found is None:
        raise missing
    referral, row = found
    if who.role == "borough" and row.borough != who.tenant:
        raise missing
    if who.role == "provider" and not await views.is_invited(conn, referral_id, who.tenant):
        raise missing
    return referral, row


async def eligible_providers(runtime: ServiceRuntime, *, who: Principal, referral_id: str,
                             include_all: bool) -> list[dict[str, Any]]:
    """The eligibility results of a referral (invited ones only unless `include_all`), with names and scores."""
    async with runtime.db.read() as conn:
        await _referral_for(conn, referral_id, who)
        results = await views.eligibility_for(conn, referral_id)
        directory = await views.providers_by_id(conn, {r["provider_id"] for r in results})
    providers = []
    for r in results:
        if not (include_all or r["invited"]):
            continue
        facts = directory.get(r["provider_id"])
        providers.append({**r, "name": facts.name if facts else None,
                          "quality_score": format_score(facts.quality_score) if facts else None})
    return providers


async def shortlist(runtime: ServiceRuntime, *, who: Principal, referral_id: str) -> dict[str, Any]:
    """The shortlist as `who` may see it: whole for the borough and readers; for a provider its own
    rank only (price and score components would reveal the lowest rival fee)."""
    async with runtime.db.read() as conn:
        await _referral_for(conn, referral_id, who)
        data = await views.shortlist_for(conn, referral_id)
        if data is None:
            policy = await _policy(runtime, conn)
            data = {"referral_id": referral_id, "policy_version": policy.version, "entries": [], "excluded": []}
    if who.role != "provider":
        return {"referral_id": referral_id, "policy_version": data["policy_version"],
                "entries": data["entries"], "excluded": data["excluded"]}
    own = [{"rank": e["rank"], "offer_id": e["offer_id"], "provider_id": e["provider_id"],
            "weekly_fee_pence": e["weekly_fee_pence"], "quality": e["quality"]}
           for e in data["entries"] if e["provider_id"] == who.tenant]
    return {"referral_id": referral_id, "policy_version": data["policy_version"],
            "ranked_offers": len(data["entries"]), "entries": own,
            "excluded": [x for x in data["excluded"] if x["provider_id"] == who.tenant]}


async def current_policy(runtime: ServiceRuntime) -> Policy:
    async with runtime.db.read() as conn:
        return await _policy(runtime, conn)


async def insights(runtime: ServiceRuntime, *, who: Principal, need: NeedCode | None,
                   month: str | None) -> dict[str, Any]:
    """Commissioners and auditors get a per-borough breakdown; a borough its own referrals only;
    a provider the pooled market figures (see `insights.market_insights`)."""
    async with runtime.db.read() as conn:
        records = await views.insight_records(conn, who.tenant if who.role == "borough" else None)
    records = [r for r in records if (need is None or r.primary_need == need) and (month is None or r.month == month)]
    scope = {"borough": "borough", "provider": "market"}.get(who.role, "partnership")
    if who.role == "provider":
        rows = market_insights(records, min_providers=MatchingSettings.of(runtime.settings).insights_min_providers,
                               today=now_utc().date())
    else:
        rows = full_insights(records, by_borough=who.role in READERS)
    return {"scope": scope, "rows": rows}


async def policy_history(runtime: ServiceRuntime) -> list[dict[str, Any]]:
    """Every version of the ranking policy, newest first, with when and by whom it was set."""
    async with runtime.db.read() as conn:
        events = await runtime.store.read_stream(POLICY_STREAM, conn)
    return views.policy_history(events)


async def preview_policy(runtime: ServiceRuntime, *, who: Principal, referral_id: str, quality_weight: Decimal,
                         price_weight: Decimal, min_quality: Decimal | None) -> dict[str, Any]:
    """The shortlist of one referral as it would rank under a proposed policy. Changes nothing: no
    event, no read model; the proposal is checked by the same rules as a change of policy."""
    async with runtime.db.read() as conn:
        referral, _ = await _referral_for(conn, referral_id, who)
        current = await _policy(runtime, conn)
        proposal = RankingPolicy()
        proposal.current = current
        proposed = proposal.mutate(proposal.change(quality_weight, price_weight, min_quality)).current
        offers = await views.offers_for(conn, referral_id)
        providers = await views.providers_by_id(conn, {o.provider_id for o in offers})
        saved = await views.shortlist_for(conn, referral_id)
    preview = rank_offers(offers, providers, proposed).as_data(referral_id, referral.borough)
    was = {e["offer_id"]: e["rank"] for e in (saved or {}).get("entries", [])}
    entries = [{**e, "current_rank": was.get(e["offer_id"])} for e in preview["entries"]]
    return {"referral_id": referral_id, "current_policy": current.as_dict(),
            "proposed_policy": {k: v for k, v in proposed.as_dict().items() if k != "version"},
            "entries": entries, "excluded": preview["excluded"]}


async def _records_for(runtime: ServiceRuntime, who: Principal, need: NeedCode | None) -> list[Any]:
    async with runtime.db.read() as conn:
        records = await views.insight_records(conn, who.tenant if who.role == "borough" else None)
    return [r for r in records if need is None or r.primary_need == need]


async def time_to_place_distribution(runtime: ServiceRuntime, *, who: Principal,
                                     need: NeedCode | None) -> dict[str, Any]:
    """Days from raised to award, bucketed: the partnership's (a borough: its own referrals)."""
    records = await _records_for(runtime, who, need)
    scope = {"borough": "borough", "provider": "market"}.get(who.role, "partnership")
    return {"scope": scope, "need": need, **time_to_place(records)}


async def fee_quartiles_by_need(runtime: ServiceRuntime, *, who: Principal, need: NeedCode | None) -> dict[str, Any]:
    """Weekly fee by need (quartiles), small cells suppressed; providers get the pooled figures."""
    records = await _records_for(runtime, who, need)
    scope = {"borough": "borough", "provider": "market"}.get(who.role, "partnership")
    rows = fee_quartiles(records, min_providers=MatchingSettings.of(runtime.settings).insights_min_providers,
                         pooled=who.role == "provider", today=now_utc().date())
    return {"scope": scope, "rows": rows}
