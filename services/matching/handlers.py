"""What matching does with the events it consumes, and the decisions it records.

Every decision is taken inside the consumer's transaction: read models, matching's own events
(`placematch.matching`), notification requests (`placematch.notifications`) and decision records
(`placematch.audit`) commit together with the processed-event id, so a redelivery changes nothing.
Notification ids derive from the consumed event's id, so they are stable across replays.
"""
from __future__ import annotations

from typing import Any, Callable

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.aggregate import NewEvent
from shared.consumers import PoisonEvent
from shared.events import Envelope
from shared.store import EventStore

from . import projections as views
from .domain import (
    NotificationRequest,
    ReferralMatch,
    award_notifications,
    closed_unfilled_notification,
    decision_record,
    match_notifications,
    shortlist_notifications,
    suspension_notification,
)
from .eligibility import ReferralFacts
from .ranking import POLICY_STREAM, Policy, RankingPolicy

# Provider events after which a provider may newly qualify for open referrals.
WIDENING = ("provider-approved", "provider-reinstated", "provider-updated")
# Provider events after which shortlists holding its offers may change.
RERANKING = ("provider-suspended", "provider-reinstated", "provider-rescored", "provider-updated")


class Matching:
    """The application service: loads inputs from read models, decides, records."""

    def __init__(self, store: EventStore, topic: Callable[[str], str]) -> None:
        self.store = store
        self.topic = topic

    # ----------------------------------------------------------------- recording helpers

    async def _notify(self, conn: AsyncConnection, requests: list[NotificationRequest]) -> None:
        await self.store.append_many(conn, [(r.notification_id, None, [r.as_event()]) for r in requests],
                                     topic=self.topic("notifications"))

    async def _audit(self, conn: AsyncConnection, referral_id: str, record: dict[str, Any]) -> None:
        await self.store.append(conn, referral_id, None, [NewEvent("decision-recorded", record)],
                                topic=self.topic("audit"))

    async def policy(self, conn: AsyncConnection) -> Policy:
        return (await self.store.load(RankingPolicy, POLICY_STREAM, conn)).current

    # ----------------------------------------------------------------- decisions

    async def match(self, conn: AsyncConnection, referral: ReferralFacts, trigger: str, cause: str,
                    provider_id: str | None = None) -> None:
        """Match a referral against the whole directory, or reconsider one provider for it."""
        aggregate = await self.store.load(ReferralMatch, referral.referral_id, conn)
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
        envelopes = await self.store.append(conn, referral.referral_id, aggregate.version, events,
                                            topic=self.topic("matching"))
        data = events[0].data
        await views.record_eligibility(conn, referral.referral_id, results, data["invited"], trigger)
        await self._notify(conn, match_notifications(cause, referral, data, directory))
        await self._audit(conn, referral.referral_id, decision_record(
            "referral-matched", envelopes[0].id, providers=directory.values(), referral=referral,
            distances={r.provider_id: r.distance_km for r in results}, output=data))

    async def rank(self, conn: AsyncConnection, referral: ReferralFacts, cause: str,
                   policy: Policy | None = None) -> None:
        """Recompute a referral's shortlist; record it when it changed."""
        aggregate = await self.store.load(ReferralMatch, referral.referral_id, conn)
        offers = await views.offers_for(conn, referral.referral_id)
        providers = await views.providers_by_id(conn, {o.provider_id for o in offers})
        policy = policy or await self.policy(conn)
        events, _ = aggregate.rank(referral, offers, providers, policy)
        if not events:
            return
        envelopes = await self.store.append(conn, referral.referral_id, aggregate.version, events,
                                            topic=self.topic("matching"))
        data = events[0].data
        await views.save_shortlist(conn, data, envelopes[0].id)
        await self._notify(conn, shortlist_notifications(cause, referral, data))
        await self._audit(conn, referral.referral_id, decision_record(
            "shortlist-ranked", envelopes[0].id, providers=providers.values(), offers=offers,
            policy=policy, output=data))

    async def rerank_all_open(self, conn: AsyncConnection, policy: Policy, cause: str) -> None:
        for referral in await views.open_referrals(conn):
            if await views.offers_for(conn, referral.referral_id):
                await self.rank(conn, referral, cause, policy)

    # ----------------------------------------------------------------- consumed events

    async def handle(self, conn: AsyncConnection, event: Envelope) -> None:
        cause = event.id
        data = event.data
        try:
            if event.source.endswith("/enrolment") or event.type.startswith("provider-"):
                await self._on_provider_event(conn, event.type, event.subject, data, cause)
            else:
                await self._on_referral_event(conn, event.type, event.subject, data, cause, event.time)
        except (KeyError, TypeError, ValueError, ArithmeticError) as error:
            # malformed data never gets better on retry: straight to the dead-letter topic
            raise PoisonEvent(f"{event.type} {event.id}: unusable data ({error!r})") from error

    async def _on_provider_event(self, conn: AsyncConnection, type_: str, provider_id: str,
                                 data: dict[str, Any], cause: str) -> None:
        existing = await views.get_provider(conn, provider_id)
        if type_ in ("provider-approved", "provider-reinstated"):
            await views.save_provider(conn, provider_id, "approved", data, data.get("quality_score"))
        elif type_ == "provider-updated":
            profile = data.get("profile") or {}
            status = existing.status if existing else "applied"
            quality = data.get("quality_score", existing.quality_score if existing else None)
            await views.save_provider(conn, provider_id, status, profile, quality)
        elif type_ == "provider-suspended":
            if existing is None:
                return
            await views.set_provider_status(conn, provider_id, "suspended")
            provider = await views.get_provider(conn, provider_id)
            assert provider is not None
            await self._notify(conn, [suspension_notification(cause, provider, data.get("reason"))])
        elif type_ == "provider-rescored":
            if existing is None:
                return  # not in the directory until approved; approval carries the score
            await views.set_provider_quality(conn, provider_id, data.get("quality_score"))
        elif type_ == "provider-rejected":
            if existing is not None:
                await views.set_provider_status(conn, provider_id, "rejected")
            return
        else:
            return
        provider = await views.get_provider(conn, provider_id)
        if provider is None:
            return
        if type_ in WIDENING and provider.status == "approved":
            for referral in await views.open_referrals(conn):
                await self.match(conn, referral, type_, cause, provider_id=provider_id)
        if type_ in RERANKING:
            policy = await self.policy(conn)
            for referral in await views.open_referrals_with_offers_from(conn, provider_id):
                await self.rank(conn, referral, cause, policy)

    async def _on_referral_event(self, conn: AsyncConnection, type_: str, referral_id: str,
                                 data: dict[str, Any], cause: str, time: str) -> None:
        if type_ == "referral-raised":
            raised_at = str(data.get("raised_at") or time)
            await views.save_referral(conn, referral_id, {k: v for k, v in data.items() if k != "raised_at"}, raised_at)
            found = await views.get_referral(conn, referral_id)
            assert found is not None
            await self.match(conn, found[0], type_, cause)
            return
        found = await views.get_referral(conn, referral_id)
        if found is None:
            return  # an event for a referral we never saw raised: nothing to decide on
        referral, row = found
        if type_ == "referral-amended":
            await views.save_referral(conn, referral_id, dict(data.get("referral") or {}), row.raised_at)
            if row.status == "open":
                amended = await views.get_referral(conn, referral_id)
                assert amended is not None
                await self.match(conn, amended[0], type_, cause)
        elif type_ == "referral-withdrawn":
            await views.set_referral(conn, referral_id, status="withdrawn")
        elif type_ == "offer-submitted":
            await views.add_offer(conn, referral_id, data)
            if row.status == "open":
                await self.rank(conn, referral, cause)
        elif type_ == "offer-withdrawn":
            await views.withdraw_offer(conn, str(data.get("offer_id")))
            if row.status == "open":
                await self.rank(conn, referral, cause)
        elif type_ == "invitation-declined":
            await views.record_decline(conn, referral_id, str(data.get("provider_id")), str(data.get("reason") or "other"))
        elif type_ == "placement-awarded":
            await views.set_referral(conn, referral_id, status="awarded", awarded_offer_id=data.get("offer_id"),
                                     awarded_fee_pence=data.get("weekly_fee_pence"),
                                     awarded_at=str(data.get("awarded_at") or time))
            providers = await views.providers_by_id(
                conn, {data.get("provider_id")} | {o["provider_id"] for o in data.get("not_selected") or []})
            await self._notify(conn, award_notifications(cause, referral_id, data, providers))
        elif type_ == "referral-closed":
            unfilled = bool(data.get("unfilled")) or data.get("reason") == "unfilled"
            if row.status == "open":
                await views.set_referral(conn, referral_id, status="closed", closed_unfilled=unfilled)
                if unfilled:
                    await self._notify(conn, [closed_unfilled_notification(cause, referral)])

