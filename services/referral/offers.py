"""Offers, declines and the award rules of a referral.

What the referral service knows from other streams comes in as values: an `Invitation` (from
`referral-matched` and the providers' standing) and the current `Shortlist` (from
`shortlist-ranked`). The rules here are pure: an offer's start must be plausible, an award names
a standing offer of a provider in good standing, and anything other than the top of a current
shortlist is justified.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final, Literal

from shared.errors import InvalidTransition
from shared.inputs import YEARS_AHEAD, years_ahead
from shared.vocabulary import DeclineReason

from .details import violation

MAX_WEEKLY_FEE_PENCE: Final = 10_000_000  # £100k a week: anything above is a typing error
MAX_TEXT: Final = 2000
"""Notes, reasons."""
MAX_JUSTIFICATION: Final = 4000
MAX_OFFER_ID: Final = 64
INVITATION_RETRY_AFTER_SECONDS: Final = 1

OfferStatus = Literal["submitted", "withdrawn", "awarded", "not_selected", "collapsed"]
"""`collapsed`: awarded, then the award collapsed before the placement started (placement's `award-collapsed`)."""


@dataclass(frozen=True)
class Invitation:
    """What the service knows about one provider and this referral, from other streams.

    `known` is False until matching's first `referral-matched` for the referral has arrived:
    then an offer cannot be judged yet and must be retried, never silently accepted.
    """

    known: bool
    invited: bool
    suspended: bool = False


@dataclass(frozen=True)
class Shortlist:
    """The latest `shortlist-ranked` for the referral: ranked offer ids (best first) and exclusions."""

    ranked_offer_ids: tuple[str, ...]
    excluded_offer_ids: frozenset[str] = frozenset()

    @property
    def top_offer_id(self) -> str | None:
        return self.ranked_offer_ids[0] if self.ranked_offer_ids else None

    def is_current_for(self, active_offer_ids: Iterable[str]) -> bool:
        """True when the ranking covers exactly the offers standing now (none missing, none gone)."""
        active = set(active_offer_ids)
        ranked = set(self.ranked_offer_ids)
        return ranked <= active and active <= ranked | self.excluded_offer_ids


class InvitationPending(InvalidTransition):
    """An offer or decline came before the invitation list is known: retry shortly (409)."""

    title = "Invitation not yet known"
    retry_after: int = INVITATION_RETRY_AFTER_SECONDS


class ShortlistPending(InvalidTransition):
    """The award came before matching ranked the current offers: retry shortly (409)."""

    title = "Shortlist not yet ranked"
    retry_after: int = INVITATION_RETRY_AFTER_SECONDS


@dataclass
class Offer:
    offer_id: str
    provider_id: str
    weekly_fee_pence: int
    start_date: date
    notes: str
    submitted_at: str
    status: OfferStatus = "submitted"
    withdrawal_reason: str | None = None
    submitted_by: str | None = None
    """The `actorid` (token `sub`) of the `offer-submitted` envelope: which staff member offered.
    Not in the event's data: the read model keeps it (`projections.update_referral_view`)."""
    withdrawn_by: str | None = None
    """The `actorid` of the `offer-withdrawn` envelope, when withdrawn."""

    def to_view(self) -> dict[str, Any]:
        return {
            "id": self.offer_id,
            "provider_id": self.provider_id,
            "weekly_fee_pence": self.weekly_fee_pence,
            "start_date": self.start_date.isoformat(),
            "notes": self.notes,
            "submitted_at": self.submitted_at,
            "status": self.status,
            "submitted_by": self.submitted_by,
            "withdrawn_by": self.withdrawn_by,
        }


@dataclass(frozen=True)
class Decline:
    provider_id: str
    reason: str
    note: str | None

    def to_view(self) -> dict[str, Any]:
        return {"provider_id": self.provider_id, "reason": self.reason, "note": self.note}


# --- rules -------------------------------------------------------------------------------------


def check_start(start_date: date, now: datetime) -> None:
    """An offer's start: not in the past, not implausibly far ahead."""
    today = now.astimezone(UTC).date()
    if start_date < today:
        raise violation("start_date", "not_in_past", "'start_date' is in the past")
    if start_date > years_ahead(today):
        raise violation("start_date", "range", f"'start_date' is more than {YEARS_AHEAD} years ahead")


def check_decline(reason: DeclineReason, note: str | None) -> None:
    if reason == DeclineReason.OTHER and not note:
        raise violation("note", "required", "say why in 'note' when the reason is 'other'")


def chosen_offer(offers: Mapping[str, Offer], offer_id: str, suspended_providers: frozenset[str]) -> Offer:
    """The offer an award names: one on this referral, still standing, of a provider not suspended."""
    offer = offers.get(offer_id)
    if offer is None:
        raise violation("offer_id", "unknown_offer", "'offer_id' is not an offer on this referral")
    if offer.status != "submitted":
        raise violation("offer_id", "offer_not_submitted", f"the offer is {offer.status}, not submitted")
    if offer.provider_id in suspended_providers:
        raise violation("offer_id", "provider_suspended", "the offering provider is suspended")
    return offer


def top_of(shortlist: Shortlist | None, active: list[Offer], chosen: Offer, justification: str | None) -> str | None:
    """The top-ranked offer of a shortlist that ranks exactly the standing offers; anything else
    than it needs a justification. Without a current shortlist the "top" would be a guess: the
    award is refused with a retry hint until matching catches up."""
    if shortlist is None or not shortlist.is_current_for(o.offer_id for o in active):
        raise ShortlistPending("the shortlist does not yet rank the current offers; retry shortly",
                               rule="shortlist_pending")
    top = shortlist.top_offer_id
    if chosen.offer_id != top and justification is None:
        raise violation("justification", "required_when_not_top",
                        "a 'justification' is required when awarding other than the top-ranked offer")
    return top
