"""Matching's decisions re-derived as an in-memory fold over its inputs (replay).

The same decisions `service.py` takes over its read models (directory, referrals, offers, the
policy and the `ReferralMatch` aggregates), taken here over plain dictionaries: no database, no
notification or audit records (replay compares `referral-matched` and `shortlist-ranked` only, so
nothing else is built). The pure parts are the live ones — `ReferralMatch` (domain.py),
eligibility and ranking, `ProviderFacts`/`ReferralFacts` built from the same canonical JSON the
read models hold — so what differs from the live path is only where the rows live. Every reaction
mirrors its counterpart in `service.py` step for step; the replay tests run both over the same log.

An input is applied atomically: a reaction that fails on unusable data (what live sends to the
dead-letter topic) is undone from an undo log, as live rolls its transaction back.

`Fold.accepts` restricts a fold to some referrals (a partition, for parallel replay): provider and
policy events are applied by every partition; referral events only by the partition owning them.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

from shared.aggregate import NewEvent
from shared.consumers import PoisonEvent
from shared.events import Envelope, dumps, loads

from .domain import ReferralMatch
from .eligibility import ProviderFacts, ReferralFacts
from .projections import PROFILE_FIELDS
from .ranking import Offer, Policy, RankingPolicy
from .service import RERANKING, WIDENING

DECISIONS = ("referral-matched", "shortlist-ranked")
PROVIDER_EVENTS = frozenset({"provider-approved", "provider-reinstated", "provider-updated", "provider-suspended",
                             "provider-rescored", "provider-rejected", "provider-vacancies-changed"})
REFERRAL_EVENTS = frozenset({"referral-raised", "referral-amended", "referral-withdrawn", "offer-submitted",
                             "offer-withdrawn", "invitation-declined", "placement-awarded", "referral-closed",
                             "award-revoked", "referral-reopened"})

# referral events naming an offer (by id, which may be another referral's): their referrals fold together
OFFER_NAMING = ("offer-submitted", "offer-withdrawn", "award-revoked", "referral-reopened")


def _roundtrip(events: list[NewEvent]) -> list[NewEvent]:
    """The events as the store gives them back (canonical JSON, parsed): what live folds."""
    return [NewEvent(e.type, loads(dumps(e.data))) for e in events]


class _Provider:
    """A `matching_providers` row; `facts` as `projections._provider` builds it from the row."""

    __slots__ = ("provider_id", "status", "profile", "quality_score", "placements_held", "_facts")

    def __init__(self, provider_id: str, status: str, profile: str, quality_score: str | None,
                 placements_held: int | None = None) -> None:
        self.provider_id, self.status, self.profile, self.quality_score = provider_id, status, profile, quality_score
        self.placements_held = placements_held
        self._facts: ProviderFacts | None = None

    @property
    def facts(self) -> ProviderFacts:
        if self._facts is None:
            self._facts = ProviderFacts.from_profile(self.provider_id, self.status, loads(self.profile),
                                                     self.quality_score, self.placements_held)
        return self._facts


class _Referral:
    """A `matching_referrals` row (the columns decisions read)."""

    __slots__ = ("referral_id", "status", "facts_json", "raised_at", "_facts")

    def __init__(self, referral_id: str, facts_json: str, raised_at: str) -> None:
        self.referral_id, self.status, self.facts_json, self.raised_at = referral_id, "open", facts_json, raised_at
        self._facts: ReferralFacts | None = None

    @property
    def facts(self) -> ReferralFacts:
        if self._facts is None:
            self._facts = ReferralFacts.from_referral(self.referral_id, loads(self.facts_json),
                                                      raised_at=self.raised_at)
        return self._facts


class Fold:
    """Matching's state, in memory; `feed` takes one input as live's consumer (or policy journal) did."""

    def __init__(self, accepts: Callable[[str], bool] | None = None) -> None:
        self.accepts = accepts
        self.providers: dict[str, _Provider] = {}
        self.referrals: dict[str, _Referral] = {}
        # referral id -> its offers' rows: [offer_id, provider_id, fee, submitted_at, arrival, withdrawn]
        self.offers: dict[str, list[list[Any]]] = {}
        self.offer_rows: dict[str, list[Any]] = {}  # offer id -> its row (offer ids are unique across referrals)
        self.offered_by: dict[str, set[str]] = {}  # provider id -> referrals it made an offer to
        self.matches: dict[str, ReferralMatch] = {}
        self.policy = RankingPolicy()
        self.decisions: dict[str, list[str]] = {}
        self._undo: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ undo log

    def _set(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        if key in table:
            old = table[key]
            self._undo.append(lambda: table.__setitem__(key, old))
        else:
            self._undo.append(lambda: table.pop(key, None))
        table[key] = value

    def _attr(self, row: Any, name: str, value: Any) -> None:
        old = getattr(row, name)
        self._undo.append(lambda: setattr(row, name, old))
        setattr(row, name, value)

    def _item(self, row: list[Any], index: int, value: Any) -> None:
        old = row[index]
        self._undo.append(lambda: row.__setitem__(index, old))
        row[index] = value

    # ------------------------------------------------------------------ inputs

    def change_policy(self, events: list[NewEvent]) -> None:
        """A policy change appended before the inputs (replay's what-if weights)."""
        self.policy.mutate(_roundtrip(events))

    def feed(self, consumer: str, envelope: Envelope, policy_journal: str) -> None:
        """One input; raises PoisonEvent (its effects undone) where live dead-lettered it."""
        self._undo.clear()
        if consumer == policy_journal:
            self._policy_change(envelope)
            return
        reaction = _REACTIONS.get(envelope.type)
        if reaction is None:
            return
        try:
            reaction(self, envelope)
        except (KeyError, TypeError, ValueError, ArithmeticError) as error:
            for undo in reversed(self._undo):
                undo()
            self._undo.clear()
            raise PoisonEvent(f"{envelope.type} {envelope.id}: unusable data ({error!r})") from error

    # ------------------------------------------------------------------ read models (projections.py)

    def _get_provider(self, provider_id: str) -> ProviderFacts | None:
        row = self.providers.get(provider_id)
        return row.facts if row else None

    def _directory(self) -> dict[str, ProviderFacts]:
        return {pid: self.providers[pid].facts for pid in sorted(self.providers)}

    def _providers_by_id(self, ids: Iterable[Any]) -> dict[str, ProviderFacts]:
        return {pid: self.providers[pid].facts for pid in sorted(i for i in set(ids) if i in self.providers)}

    def _save_provider(self, provider_id: str, status: str, profile: dict[str, Any], quality_score: Any) -> None:
        kept = {k: profile.get(k) for k in PROFILE_FIELDS}
        existing = self.providers.get(provider_id)  # an upsert: the places held stay as they were
        self._set(self.providers, provider_id, _Provider(provider_id, status, dumps(kept).decode(),
                                                         None if quality_score is None else str(quality_score),
                                                         existing.placements_held if existing else None))

    def _replace_provider(self, provider_id: str, **changes: Any) -> None:
        row = self.providers[provider_id]
        values = {"status": row.status, "profile": row.profile, "quality_score": row.quality_score,
                  "placements_held": row.placements_held} | changes
        self._set(self.providers, provider_id, _Provider(provider_id, **values))

    def _open_referrals(self, ids: Iterable[str] | None = None) -> list[ReferralFacts]:
        rows = (self.referrals[i] for i in (self.referrals if ids is None else ids) if i in self.referrals)
        return [r.facts for r in sorted((r for r in rows if r.status == "open"),
                                        key=lambda r: (r.raised_at, r.referral_id))]

    def _save_referral(self, referral_id: str, facts: dict[str, Any], raised_at: str) -> None:
        existing = self.referrals.get(referral_id)
        row = _Referral(referral_id, dumps(facts).decode(), raised_at)
        if existing is not None:
            row.status = existing.status
        self._set(self.referrals, referral_id, row)

    def _offers_for(self, referral_id: str) -> list[Offer]:
        return [Offer(*row) for row in sorted(self.offers.get(referral_id, ()), key=lambda row: row[4])]

    def _add_offer(self, referral_id: str, data: dict[str, Any]) -> None:
        if data["offer_id"] in self.offer_rows:
            return
        rows = self.offers.get(referral_id, [])
        row = [data["offer_id"], data["provider_id"], int(data["weekly_fee_pence"]),
               str(data.get("submitted_at") or ""), max((r[4] for r in rows), default=0) + 1, False]
        self._set(self.offers, referral_id, [*rows, row])
        self._set(self.offer_rows, row[0], row)
        offered = self.offered_by.setdefault(row[1], set())
        if referral_id not in offered:
            offered.add(referral_id)
            self._undo.append(lambda: offered.discard(referral_id))

    # ------------------------------------------------------------------ decisions (service.match / rank)

    def _aggregate(self, referral_id: str) -> ReferralMatch:
        aggregate = self.matches.get(referral_id)
        if aggregate is None:
            aggregate = ReferralMatch(referral_id)
            self._set(self.matches, referral_id, aggregate)
        return aggregate

    def _record(self, aggregate: ReferralMatch, events: list[NewEvent]) -> None:
        saved = dict(aggregate.__dict__)

        def restore() -> None:
            aggregate.__dict__.clear()
            aggregate.__dict__.update(saved)
        self._undo.append(restore)
        lines = self.decisions.get(aggregate.id, [])
        self._set(self.decisions, aggregate.id, [*lines, *(f"{e.type} {dumps(e.data).decode()}" for e in events)])
        aggregate.mutate(_roundtrip(events))

    def _match(self, referral: ReferralFacts, *, trigger: str, provider_id: str | None = None) -> None:
        aggregate = self._aggregate(referral.referral_id)
        if provider_id is None:
            events, _ = aggregate.match(referral, self._directory(), trigger)
        else:
            provider = self._get_provider(provider_id)
            if provider is None:
                return
            events, _ = aggregate.reconsider(referral, provider, trigger)
        if events:
            self._record(aggregate, events)

    def _rank(self, referral: ReferralFacts, policy: Policy | None = None) -> None:
        aggregate = self._aggregate(referral.referral_id)
        offers = self._offers_for(referral.referral_id)
        providers = self._providers_by_id(o.provider_id for o in offers)
        events, _ = aggregate.rank(referral, offers, providers, policy or self.policy.current)
        if events:
            self._record(aggregate, events)

    def _policy_change(self, event: Envelope) -> None:
        """service.replay_policy_change: appended as recorded, then every open shortlist re-ranked."""
        self.policy.mutate(_roundtrip([NewEvent(event.type, event.data)]))
        policy = self.policy.current
        for referral in self._open_referrals():
            if self.offers.get(referral.referral_id):
                self._rank(referral, policy)

    # ------------------------------------------------------------------ reactions: enrolment

    def _after_provider_change(self, event: Envelope) -> None:
        provider = self._get_provider(event.subject)
        if provider is None:
            return
        if event.type in WIDENING and provider.status == "approved":
            for referral in self._open_referrals():
                self._match(referral, trigger=event.type, provider_id=event.subject)
        if event.type in RERANKING:
            policy = self.policy.current
            for referral in self._open_referrals(self.offered_by.get(event.subject, ())):
                self._rank(referral, policy)

    def on_provider_approved(self, event: Envelope) -> None:
        data = event.data
        self._save_provider(event.subject, "approved", data, data.get("quality_score"))
        if data.get("placements_held") is not None:
            self._replace_provider(event.subject, placements_held=int(data["placements_held"]))
        self._after_provider_change(event)

    def on_provider_vacancies_changed(self, event: Envelope) -> None:
        held = int(event.data["placements_held"])
        if event.subject not in self.providers:
            return  # not in the directory until approved; approval carries the places held
        self._replace_provider(event.subject, placements_held=held)
        self._after_provider_change(event)

    def on_provider_updated(self, event: Envelope) -> None:
        existing = self._get_provider(event.subject)
        data = event.data
        profile = data.get("profile") or {}
        status = existing.status if existing else "applied"
        quality = data.get("quality_score", existing.quality_score if existing else None)
        self._save_provider(event.subject, status, profile, quality)
        self._after_provider_change(event)

    def on_provider_suspended(self, event: Envelope) -> None:
        if self._get_provider(event.subject) is None:
            return
        self._replace_provider(event.subject, status="suspended")
        self._get_provider(event.subject)  # live builds the facts for the suspension notice here
        self._after_provider_change(event)

    def on_provider_rescored(self, event: Envelope) -> None:
        if self._get_provider(event.subject) is None:
            return
        score = event.data.get("quality_score")
        self._replace_provider(event.subject, quality_score=None if score is None else str(score))
        self._after_provider_change(event)

    def on_provider_rejected(self, event: Envelope) -> None:
        if self._get_provider(event.subject) is not None:
            self._replace_provider(event.subject, status="rejected")

    # ------------------------------------------------------------------ reactions: referral

    def on_referral_raised(self, event: Envelope) -> None:
        data = event.data
        raised_at = str(data.get("raised_at") or event.time)
        self._save_referral(event.subject, {k: v for k, v in data.items() if k != "raised_at"}, raised_at)
        self._match(self.referrals[event.subject].facts, trigger=event.type)

    def on_referral_amended(self, event: Envelope) -> None:
        row = self.referrals.get(event.subject)
        if row is None:
            return
        row.facts  # noqa: B018 - live builds the facts of the row it found (and fails there on bad data)
        self._save_referral(event.subject, dict(event.data.get("referral") or {}), row.raised_at)
        if row.status == "open":
            self._match(self.referrals[event.subject].facts, trigger=event.type)

    def on_referral_withdrawn(self, event: Envelope) -> None:
        if (row := self.referrals.get(event.subject)) is not None:
            row.facts  # noqa: B018
            self._attr(row, "status", "withdrawn")

    def on_offer_submitted(self, event: Envelope) -> None:
        row = self.referrals.get(event.subject)
        if row is None:
            return
        referral = row.facts
        self._add_offer(event.subject, event.data)
        if row.status == "open":
            self._rank(referral)

    def on_offer_withdrawn(self, event: Envelope) -> None:
        row = self.referrals.get(event.subject)
        if row is None:
            return
        referral = row.facts
        offer = self.offer_rows.get(str(event.data.get("offer_id")))
        if offer is not None:
            self._item(offer, 5, True)
        if row.status == "open":
            self._rank(referral)

    def on_invitation_declined(self, event: Envelope) -> None:
        if (row := self.referrals.get(event.subject)) is not None:
            row.facts  # noqa: B018 - declines feed insights only: not built
            _ = event.data.get("provider_id"), event.data.get("reason")

    def on_placement_awarded(self, event: Envelope) -> None:
        if (row := self.referrals.get(event.subject)) is None:
            return
        row.facts  # noqa: B018
        data = event.data
        self._attr(row, "status", "awarded")
        offering: set[Any] = {data.get("provider_id")} | {o["provider_id"] for o in data.get("not_selected") or []}
        self._providers_by_id(offering)  # live reads them for the award notices (and fails there on bad data)

    def _collapse(self, offer_id: str) -> None:
        offer = self.offer_rows.get(offer_id)
        if offer is not None:
            self._item(offer, 5, True)

    def on_award_revoked(self, event: Envelope) -> None:
        if (row := self.referrals.get(event.subject)) is None:
            return
        row.facts  # noqa: B018 - live builds the facts of the row it found
        self._collapse(str(event.data["offer_id"]))
        self._attr(row, "status", "open")

    def on_referral_reopened(self, event: Envelope) -> None:
        if (row := self.referrals.get(event.subject)) is None:
            return
        referral = row.facts
        self._collapse(str(event.data["collapsed_offer_id"]))
        if row.status == "awarded":
            self._attr(row, "status", "open")
        elif row.status != "open":
            return
        if self.offers.get(event.subject):
            self._rank(referral)

    def on_referral_closed(self, event: Envelope) -> None:
        if (row := self.referrals.get(event.subject)) is None:
            return
        row.facts  # noqa: B018
        if row.status == "open":
            self._attr(row, "status", "closed")


_REACTIONS: dict[str, Callable[[Fold, Envelope], None]] = {
    "provider-approved": Fold.on_provider_approved,
    "provider-reinstated": Fold.on_provider_approved,
    "provider-updated": Fold.on_provider_updated,
    "provider-suspended": Fold.on_provider_suspended,
    "provider-rescored": Fold.on_provider_rescored,
    "provider-rejected": Fold.on_provider_rejected,
    "provider-vacancies-changed": Fold.on_provider_vacancies_changed,
    "referral-raised": Fold.on_referral_raised,
    "referral-amended": Fold.on_referral_amended,
    "referral-withdrawn": Fold.on_referral_withdrawn,
    "offer-submitted": Fold.on_offer_submitted,
    "offer-withdrawn": Fold.on_offer_withdrawn,
    "invitation-declined": Fold.on_invitation_declined,
    "placement-awarded": Fold.on_placement_awarded,
    "referral-closed": Fold.on_referral_closed,
    "award-revoked": Fold.on_award_revoked,
    "referral-reopened": Fold.on_referral_reopened,
}


def partition_of(order: list[tuple[str, str]], inputs: dict[str, Envelope], parts: int) -> dict[str, int]:
    """Referral id -> partition in [0, parts): referrals sharing an offer id (one offer withdrawn
    or resubmitted under another referral) stay together, so each partition's fold sees every row
    its decisions read; otherwise spread round-robin in order of first appearance."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    owner: dict[str, str] = {}
    for _, event_id in order:
        envelope = inputs.get(event_id)
        if envelope is None or envelope.type not in REFERRAL_EVENTS:
            continue
        find(envelope.subject)
        if envelope.type in OFFER_NAMING:
            key = "collapsed_offer_id" if envelope.type == "referral-reopened" else "offer_id"
            offer_id = str(envelope.data.get(key)) if isinstance(envelope.data, dict) else ""
            other = owner.setdefault(offer_id, envelope.subject)
            a, b = find(other), find(envelope.subject)
            if a != b:
                parent[b] = a
    groups: dict[str, int] = {}
    assigned: dict[str, int] = {}
    for referral_id in parent:
        root = find(referral_id)
        if root not in groups:
            groups[root] = len(groups) % parts
        assigned[referral_id] = groups[root]
    return assigned


def owned(event: Envelope, partition: dict[str, int], part: int) -> bool:
    """Whether partition `part` applies `event`: provider and policy events everywhere."""
    return event.type not in REFERRAL_EVENTS or partition.get(event.subject, 0) == part


def referral_ids(partition: dict[str, int], part: int) -> Collection[str]:
    return {r for r, p in partition.items() if p == part}
