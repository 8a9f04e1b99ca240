"""Matching decisions for one referral, and the notification and audit records they give rise to.

`ReferralMatch` is the aggregate whose stream (id = referral id) holds matching's own decisions:
`referral-matched` and `shortlist-ranked`. Its inputs (the referral, the provider directory, the
offers, the policy) come from read models fed by other services' events and are passed in; the
decisions carry everything needed to check them later (see `decision_record`).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from shared.aggregate import Aggregate, NewEvent
from shared.vocabulary import NotificationRequest, Recipient, WebhookType

from .eligibility import Eligibility, ProviderFacts, ReferralFacts, evaluate, evaluate_all
from .ranking import DEFAULT_POLICY, Offer, Policy, Shortlist, rank

# Fixed namespace: notification ids derived from their cause are the same on every replay, so a
# redelivered input event can never request a second, differently-identified notification.
NOTIFICATION_NAMESPACE = uuid.UUID("5d0f8a52-5c1e-4c36-9b0e-6f3f2b7f6a10")

REFERRAL_TRIGGERS = ("referral-raised", "referral-amended")


class ReferralMatch(Aggregate):
    """Who has been invited to a referral and the last shortlist published for it."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.invited: set[str] = set()
        self.matched = False
        self.last_shortlist: dict[str, Any] | None = None

    def match(
        self, referral: ReferralFacts, providers: Mapping[str, ProviderFacts], trigger: str
    ) -> tuple[list[NewEvent], list[Eligibility]]:
        """Evaluate the whole directory (on referral-raised / referral-amended).

        Always decides (even when nobody is eligible) so every referral has a recorded match.
        Invitations are cumulative: an amendment never un-invites a provider.
        """
        results = evaluate_all(providers, referral)
        return self._decide(referral, results, trigger, always=True), results

    def reconsider(
        self, referral: ReferralFacts, provider: ProviderFacts, trigger: str
    ) -> tuple[list[NewEvent], Eligibility]:
        """Re-evaluate one provider after it was approved, reinstated or changed.

        Emits only when the provider is newly eligible: a school that joins mid-year sees the
        referrals already out.
        """
        result = evaluate(provider, referral)
        return self._decide(referral, [result], trigger, always=False), result

    def _decide(
        self, referral: ReferralFacts, results: list[Eligibility], trigger: str, *, always: bool
    ) -> list[NewEvent]:
        newly = sorted(r.provider_id for r in results if r.eligible and r.provider_id not in self.invited)
        if not newly and not always:
            return []
        return [
            NewEvent(
                "referral-matched",
                {
                    "referral_id": referral.referral_id,
                    "borough": referral.borough,
                    "invited": sorted(self.invited | set(newly)),
                    "newly_invited": newly,
                    "results": [r.as_result() for r in results],
                    "trigger": trigger,
                },
            )
        ]

    def rank(
        self,
        referral: ReferralFacts,
        offers: Iterable[Offer],
        providers: Mapping[str, ProviderFacts],
        policy: Policy = DEFAULT_POLICY,
    ) -> tuple[list[NewEvent], Shortlist]:
        """Recompute the shortlist; emit `shortlist-ranked` only when it differs from the last."""
        shortlist = rank(offers, providers, policy)
        data = shortlist.as_data(referral.referral_id, referral.borough)
        if data == self.last_shortlist:
            return [], shortlist
        return [NewEvent("shortlist-ranked", data)], shortlist

    def apply(self, type: str, data: dict[str, Any]) -> None:
        if type == "referral-matched":
            self.invited = set(data["invited"])
            self.matched = True
        elif type == "shortlist-ranked":
            self.last_shortlist = data


def notification_id(cause: str, referral_id: str | None, webhook_type: str, role: str, tenant: str) -> str:
    """Deterministic id from what caused the notification, about which referral, and who receives
    it: one event (an approval, a policy change) may notify the same recipient about many referrals."""
    return str(uuid.uuid5(NOTIFICATION_NAMESPACE, f"{cause}|{referral_id or ''}|{webhook_type}|{role}|{tenant}"))


def _request(cause: str, webhook_type: WebhookType, role: str, tenant: str, email: str | None,
             referral_id: str | None, data: dict[str, Any]) -> NotificationRequest:
    kind = webhook_type.value
    return NotificationRequest(notification_id(cause, referral_id, kind, role, tenant), kind, Recipient(role, tenant),
                               email, referral_id, data)


def match_notifications(
    cause: str, referral: ReferralFacts, matched: Mapping[str, Any], providers: Mapping[str, ProviderFacts]
) -> list[NotificationRequest]:
    """One `referral.invited` per newly invited provider; `referral.no_eligible_providers` to the
    borough when a referral-triggered match leaves nobody invited."""
    requests = []
    summary = referral.redacted_summary()
    for provider_id in matched["newly_invited"]:
        provider = providers.get(provider_id)
        requests.append(_request(cause, WebhookType.REFERRAL_INVITED, "provider", provider_id,
                                 provider.contact_email if provider else None, referral.referral_id, summary))
    if not matched["invited"] and matched["trigger"] in REFERRAL_TRIGGERS:
        failed: dict[str, int] = {}
        for result in matched["results"]:
            for rule, passed in result["rules"].items():
                if not passed:
                    failed[rule] = failed.get(rule, 0) + 1
        requests.append(_request(cause, WebhookType.REFERRAL_NO_ELIGIBLE_PROVIDERS, "borough", referral.borough, None,
                                 referral.referral_id, {
                                     "referral_id": referral.referral_id,
                                     "primary_need": referral.primary_need,
                                     "placement_type": referral.placement_type,
                                     "required_from": referral.required_from,
                                     "providers_considered": len(matched["results"]),
                                     "failed_rules": dict(sorted(failed.items())),
                                 }))
    return requests


def shortlist_notifications(cause: str, referral: ReferralFacts,
                            ranked: Mapping[str, Any]) -> list[NotificationRequest]:
    """`shortlist.updated`: the whole shortlist to the borough; to each ranked provider only its
    own rank (no price or score components, which would reveal the lowest rival fee)."""
    requests = [_request(cause, WebhookType.SHORTLIST_UPDATED, "borough", referral.borough, None,
                         referral.referral_id, dict(ranked))]
    total = len(ranked["entries"])
    for entry in ranked["entries"]:
        requests.append(_request(cause, WebhookType.SHORTLIST_UPDATED, "provider", entry["provider_id"], None,
                                 referral.referral_id, provider_view_entry(referral.referral_id, ranked, entry, total)))
    return requests


def provider_view_entry(referral_id: str, ranked: Mapping[str, Any], entry: Mapping[str, Any],
                        total: int) -> dict[str, Any]:
    return {
        "referral_id": referral_id,
        "policy_version": ranked["policy_version"],
        "rank": entry["rank"],
        "ranked_offers": total,
        "offer_id": entry["offer_id"],
        "weekly_fee_pence": entry["weekly_fee_pence"],
        "quality": entry["quality"],
    }


def award_notifications(cause: str, referral_id: str, awarded: Mapping[str, Any],
                        providers: Mapping[str, ProviderFacts]) -> list[NotificationRequest]:
    """`offer.accepted` to the winner, `offer.not_selected` to every other offering provider."""
    def email(pid: str) -> str | None:
        p = providers.get(pid)
        return p.contact_email if p else None

    winner = awarded["provider_id"]
    requests = [_request(cause, WebhookType.OFFER_ACCEPTED, "provider", winner, email(winner), referral_id,
                         {"referral_id": referral_id, "offer_id": awarded["offer_id"],
                          "weekly_fee_pence": awarded["weekly_fee_pence"]})]
    for other in sorted(awarded.get("not_selected") or [], key=lambda o: (o["provider_id"], o["offer_id"])):
        requests.append(_request(cause, WebhookType.OFFER_NOT_SELECTED, "provider", other["provider_id"],
                                 email(other["provider_id"]), referral_id,
                                 {"referral_id": referral_id, "offer_id": other["offer_id"]}))
    return requests


def closed_unfilled_notification(cause: str, referral: ReferralFacts) -> NotificationRequest:
    return _request(cause, WebhookType.REFERRAL_CLOSED_UNFILLED, "borough", referral.borough, None,
                    referral.referral_id,
                    {"referral_id": referral.referral_id, "primary_need": referral.primary_need,
                     "placement_type": referral.placement_type, "required_from": referral.required_from})


def suspension_notification(cause: str, provider: ProviderFacts, reason: str | None) -> NotificationRequest:
    return _request(cause, WebhookType.PROVIDER_SUSPENDED, "provider", provider.provider_id,
                    provider.contact_email, None,
                    {"provider_id": provider.provider_id, "reason": reason})


def decision_record(decision: str, event_id: str, *, providers: Iterable[ProviderFacts] = (),
                    offers: Iterable[Offer] = (), policy: Policy | None = None,
                    referral: ReferralFacts | None = None, distances: Mapping[str, Any] | None = None,
                    output: Mapping[str, Any]) -> dict[str, Any]:
    """`decision-recorded` data: the decision with its inputs as seen, checkable without our DB."""
    provider_facts = []
    for p in sorted(providers, key=lambda p: p.provider_id):
        facts = p.as_dict()
        if distances is not None:
            km = distances.get(p.provider_id)
            facts["distance_km"] = None if km is None else str(km)
        provider_facts.append(facts)
    inputs: dict[str, Any] = {
        "providers": provider_facts,
        "offers": [o.as_dict() for o in sorted(offers, key=lambda o: (o.submitted_at, o.arrival, o.offer_id))],
        "policy": policy.as_dict() if policy else None,
    }
    if referral is not None:
        inputs["referral"] = referral.redacted_summary() | {
            "location": referral.location.to_data() if referral.location else None,
        }
    return {"decision": decision, "event_id": event_id, "inputs": inputs, "output": dict(output)}
