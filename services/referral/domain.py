"""The Referral aggregate: a borough's placement request, its lifecycle, the offers it draws, the award.

Pure domain code: no I/O, no clock, no id generation. The application service passes in the
current time, fresh ids, typed values (parsed once by the request models) and what the service has
learned from other streams (invitations and suspensions from `placematch.matching` /
`placematch.enrolment`, the current shortlist), so every decision here can be replayed and
explained from its inputs. The child's details and their rules are in `details.py`; offers,
declines and the award rules in `offers.py`.

Lifecycle::

    raised -> (amended)* -> awarded | withdrawn | closed
    awarded -> (award collapses before the start) -> awarded (the next offer) | open (reopened)

Offers live inside the referral (submitted -> withdrawn); invited providers may instead decline
with a reason code, which is kept as market intelligence.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal

from shared.aggregate import Aggregate, NewEvent
from shared.errors import Forbidden, InvalidTransition, NotFound
from shared.vocabulary import DeclineReason, format_instant, parse_instant

from .details import PERSONAL_FIELDS, ReferralDetails, violation
from .offers import (
    Decline,
    Invitation,
    InvitationPending,
    Offer,
    Shortlist,
    check_decline,
    check_start,
    chosen_offer,
    top_of,
)

ReferralStatus = Literal["new", "open", "awarded", "withdrawn", "closed"]
CloseReason = Literal["unfilled", "by_borough"]


REOPEN_DAYS: Final = 14
"""A referral reopened after a collapsed award takes offers for at least this long from the collapse."""


def _at(now: datetime) -> str:
    return format_instant(now, "seconds")


# --- the aggregate ----------------------------------------------------------------------------


class Referral(Aggregate):
    """A borough's placement request. Owned by one borough; offers and declines live inside it."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status: ReferralStatus = "new"
        self.borough: str = ""
        self.details: ReferralDetails | None = None
        self.raised_at: str | None = None
        self.offers: dict[str, Offer] = {}
        self.declines: dict[str, Decline] = {}
        self.awarded_offer_id: str | None = None
        self.justification: str | None = None
        self.close_reason: CloseReason | None = None
        self.withdrawal_reason: str | None = None

    # queries

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def active_offers(self) -> list[Offer]:
        return [offer for offer in self.offers.values() if offer.status == "submitted"]

    def active_offer_of(self, provider_id: str) -> Offer | None:
        return next((o for o in self.active_offers() if o.provider_id == provider_id), None)

    def is_due_for_closing(self, now: datetime) -> bool:
        """Open, past its offer deadline and without a standing offer: close it unfilled."""
        return (
            self.is_open
            and self.details is not None
            and now >= self.details.offer_deadline
            and not self.active_offers()
        )

    def to_data(self) -> dict[str, Any]:
        assert self.details is not None
        return self.details.to_data(self.borough)

    # commands

    def raise_referral(self, borough: str, details: ReferralDetails, now: datetime) -> list[NewEvent]:
        """Raise this (new, empty) referral for `borough`."""
        if not borough:
            raise Forbidden("a referral is raised by a borough")
        if self.status != "new":
            raise InvalidTransition(f"referral {self.id} already exists", rule="already_raised")
        details.validate(now)
        return [NewEvent("referral-raised", {**details.to_data(borough), "raised_at": _at(now)})]

    def amend(self, borough: str, changes: Mapping[str, Any], now: datetime) -> list[NewEvent]:
        """Change the given fields (typed values; None clears an optional one)."""
        self._require_owner(borough)
        self._require_open("amend")
        assert self.details is not None
        if not changes:
            raise violation("body", "not_empty", "an amendment must change at least one field")
        amended = self.details.with_changes(changes)
        changed = {
            name: amended.field_data(name)
            for name in ReferralDetails.FIELDS
            if amended.field_data(name) != self.details.field_data(name)
        }
        if not changed:
            raise violation("body", "no_changes", "the amendment changes nothing")
        amended.validate(now)
        if "birth_date" in changed or "required_from" in changed:
            changed["age_at_start"] = amended.age_at_start
        return [NewEvent("referral-amended", {"changes": changed, "referral": amended.to_data(self.borough)})]

    def withdraw(self, borough: str, reason: str | None) -> list[NewEvent]:
        self._require_owner(borough)
        self._require_open("withdraw")
        return [NewEvent("referral-withdrawn", {"reason": reason})]

    def submit_offer(self, *, offer_id: str, provider_id: str, invitation: Invitation, weekly_fee_pence: int,
                     start_date: date, notes: str | None, now: datetime) -> list[NewEvent]:
        self._require_visible_to_provider(provider_id, invitation)
        self._require_open("take offers on")
        assert self.details is not None
        if now >= self.details.offer_deadline:
            raise InvalidTransition("the offer deadline has passed", field="offer_deadline", rule="deadline_passed")
        if self.active_offer_of(provider_id) is not None:
            raise InvalidTransition(
                "you already have an offer on this referral: withdraw it before offering again",
                rule="one_offer_per_provider",
            )
        check_start(start_date, now)
        return [NewEvent("offer-submitted", {
            "offer_id": offer_id,
            "provider_id": provider_id,
            "weekly_fee_pence": weekly_fee_pence,
            "start_date": start_date.isoformat(),
            "notes": notes or "",
            "submitted_at": _at(now),
        })]

    def withdraw_offer(self, provider_id: str, offer_id: str, reason: str | None) -> list[NewEvent]:
        offer = self.offers.get(offer_id)
        if offer is None or offer.provider_id != provider_id:
            raise NotFound("no such offer of yours on this referral")
        self._require_open("withdraw offers on")
        if offer.status != "submitted":
            raise InvalidTransition(f"the offer is {offer.status}, not submitted", rule="offer_not_submitted")
        return [NewEvent("offer-withdrawn", {"offer_id": offer_id, "provider_id": provider_id, "reason": reason})]

    def decline(self, provider_id: str, invitation: Invitation, reason: DeclineReason,
                note: str | None = None) -> list[NewEvent]:
        """An invited provider says no, with a reason code: market intelligence on unmet demand."""
        # A suspended provider may still tell the borough it cannot take the child.
        self._require_visible_to_provider(provider_id, replace(invitation, suspended=False))
        self._require_open("decline")
        if provider_id in self.declines:
            raise InvalidTransition("you have already declined this referral", rule="already_declined")
        if self.active_offer_of(provider_id) is not None:
            raise InvalidTransition("withdraw your offer before declining", rule="offer_standing")
        check_decline(reason, note)
        return [NewEvent("invitation-declined", {"provider_id": provider_id, "reason": reason.value, "note": note})]

    def award(self, *, borough: str, offer_id: str, justification: str | None, shortlist: Shortlist | None,
              suspended_providers: frozenset[str], now: datetime) -> list[NewEvent]:
        """Award the named offer. Anything other than the top of the current shortlist must be justified
        (`offers.top_of`)."""
        self._require_owner(borough)
        self._require_open("award")
        offer = chosen_offer(self.offers, offer_id, suspended_providers)
        active = self.active_offers()
        top = top_of(shortlist, active, offer, justification)
        return [NewEvent("placement-awarded", {
            "offer_id": offer.offer_id,
            "provider_id": offer.provider_id,
            "weekly_fee_pence": offer.weekly_fee_pence,
            "justification": justification,
            "top_ranked_offer_id": top,
            "not_selected": [{"offer_id": o.offer_id, "provider_id": o.provider_id}
                             for o in active if o.offer_id != offer.offer_id],
            "borough": self.borough,
            "awarded_at": _at(now),
        })]

    def after_collapse(self, *, collapse: Mapping[str, Any], placement_id: str, suspended_providers: frozenset[str],
                       at: datetime) -> list[NewEvent]:
        """Placement's `award-collapsed` about this referral's award: before the start the provider
        withdrew or the start failed, and the borough said what comes next. The award is revoked
        (`award-revoked`: the offer is `collapsed`, the offers not selected stand again), then

        - `award_next_offer`: the next offer is awarded (`placement-awarded` again, `after_collapse_of`
          the collapsed offer). Placement has applied DESIGN.md's justification rule against the
          remaining ranking; what only the referral knows is checked here: the offer is one of this
          referral's that stood at the award (not withdrawn, not the collapsed one) and its provider is
          not suspended. If it is not, the referral reopens instead (`reason: next_offer_unavailable`);
        - `reopen`: the referral reopens for new offers (`referral-reopened`) with a new deadline,
          the later of the old one and `REOPEN_DAYS` after the collapse.

        A collapse of an award that is not the current one (already handled, or of an older award)
        changes nothing. `at` is the collapse event's time (replay decides the same)."""
        collapsed_id = str(collapse.get("offer_id") or "")
        if self.status != "awarded" or self.awarded_offer_id != collapsed_id or collapsed_id not in self.offers:
            return []
        collapsed = self.offers[collapsed_id]
        next_step = str(collapse.get("next") or "reopen")
        revoked = NewEvent("award-revoked", {
            "offer_id": collapsed_id, "provider_id": collapsed.provider_id, "placement_id": placement_id,
            "reason": collapse.get("reason"), "next": next_step, "borough": self.borough, "revoked_at": _at(at)})
        standing = [o for o in self.offers.values() if o.status == "not_selected"]
        if next_step == "award_next_offer":
            chosen = self.offers.get(str(collapse.get("next_offer_id") or ""))
            if chosen is not None and chosen.status == "not_selected" and chosen.provider_id not in suspended_providers:
                return [revoked, NewEvent("placement-awarded", {
                    "offer_id": chosen.offer_id,
                    "provider_id": chosen.provider_id,
                    "weekly_fee_pence": chosen.weekly_fee_pence,
                    "justification": collapse.get("justification"),
                    "top_ranked_offer_id": collapse.get("top_remaining_offer_id"),
                    "not_selected": [{"offer_id": o.offer_id, "provider_id": o.provider_id}
                                     for o in standing if o.offer_id != chosen.offer_id],
                    "borough": self.borough,
                    "awarded_at": _at(at),
                    "after_collapse_of": collapsed_id,
                })]
            reason = "next_offer_unavailable"
        else:
            reason = "reopened_by_borough"
        assert self.details is not None
        deadline = max(self.details.offer_deadline, at + timedelta(days=REOPEN_DAYS))
        return [revoked, NewEvent("referral-reopened", {
            "offer_deadline": _at(deadline), "reason": reason, "collapsed_offer_id": collapsed_id,
            "standing_offers": [{"offer_id": o.offer_id, "provider_id": o.provider_id} for o in standing],
            "borough": self.borough})]

    def close(self, borough: str) -> list[NewEvent]:
        """The borough stops the process without placing: the demand stays on record as unfilled."""
        self._require_owner(borough)
        self._require_open("close")
        return [NewEvent("referral-closed", {"reason": "by_borough", "unfilled": True, "borough": self.borough})]

    def erase_personal_data(self, borough: str, erased_at: datetime) -> list[NewEvent]:
        """Forget who the child is (child_ref, birth date) on request; the rest stays as evidence."""
        self._require_owner(borough)
        if self.details is None:
            raise NotFound("no such referral")
        if self.details.child_ref is None and self.details.birth_date is None:
            return []
        return [NewEvent("personal-data-erased", {"fields": list(PERSONAL_FIELDS), "borough": self.borough,
                                                   "erased_at": _at(erased_at)})]

    def close_unfilled(self, now: datetime) -> list[NewEvent]:
        """The deadline closer: only at or after `offer_deadline`, and only with no standing offer."""
        self._require_open("close")
        assert self.details is not None
        if now < self.details.offer_deadline:
            raise InvalidTransition("the offer deadline has not passed yet", rule="deadline_not_passed")
        if self.active_offers():
            raise InvalidTransition("the referral has offers to award", rule="has_offers")
        return [NewEvent("referral-closed", {"reason": "unfilled", "unfilled": True, "borough": self.borough})]

    # guards

    def _require_owner(self, borough: str) -> None:
        """Another borough's referral does not exist for it: 404, never 403 (no id probing)."""
        if self.status == "new" or borough != self.borough:
            raise NotFound(f"referral {self.id} not found")

    def _require_open(self, action: str) -> None:
        if self.status != "open":
            raise InvalidTransition(f"cannot {action} a referral that is {self.status}", rule="referral_not_open")

    def _require_visible_to_provider(self, provider_id: str, invitation: Invitation) -> None:
        if self.status == "new":
            raise NotFound(f"referral {self.id} not found")
        if invitation.suspended:
            raise Forbidden("your enrolment is suspended: you cannot offer", rule="provider_suspended")
        if invitation.known and not invitation.invited:
            raise Forbidden("you were not invited to this referral", rule="not_invited")
        if not invitation.known:
            raise InvitationPending(
                "the invitation list for this referral is not known yet; retry shortly", rule="invitation_pending"
            )

    # folding

    def apply(self, type: str, data: dict[str, Any]) -> None:
        match type:
            case "referral-raised":
                self.status = "open"
                self.borough = data["borough"]
                self.details = ReferralDetails.from_data(data)
                self.raised_at = data.get("raised_at")
            case "referral-amended":
                self.details = ReferralDetails.from_data(data["referral"])
            case "referral-withdrawn":
                self.status = "withdrawn"
                self.withdrawal_reason = data.get("reason")
            case "offer-submitted":
                self.offers[data["offer_id"]] = Offer(
                    offer_id=data["offer_id"],
                    provider_id=data["provider_id"],
                    weekly_fee_pence=data["weekly_fee_pence"],
                    start_date=date.fromisoformat(data["start_date"]),
                    notes=data.get("notes") or "",
                    submitted_at=data["submitted_at"],
                )
            case "offer-withdrawn":
                offer = self.offers[data["offer_id"]]
                offer.status = "withdrawn"
                offer.withdrawal_reason = data.get("reason")
            case "invitation-declined":
                self.declines[data["provider_id"]] = Decline(data["provider_id"], data["reason"], data.get("note"))
            case "placement-awarded":
                self.status = "awarded"
                self.awarded_offer_id = data["offer_id"]
                self.justification = data.get("justification")
                for offer in self.offers.values():
                    if offer.offer_id == data["offer_id"]:
                        offer.status = "awarded"
                    elif offer.status == "submitted":
                        offer.status = "not_selected"
            case "award-revoked":
                self.status = "open"
                self.awarded_offer_id = None
                self.justification = None
                for offer in self.offers.values():
                    if offer.offer_id == data["offer_id"]:
                        offer.status = "collapsed"
                        offer.withdrawal_reason = data.get("reason")
                    elif offer.status == "not_selected":
                        offer.status = "submitted"
            case "referral-reopened":
                self.status = "open"
                if self.details is not None:
                    self.details = replace(self.details, offer_deadline=parse_instant(data["offer_deadline"]))
            case "referral-closed":
                self.status = "closed"
                self.close_reason = data["reason"]
            case "personal-data-erased":
                if self.details is not None:
                    self.details = replace(self.details, child_ref=None, birth_date=None,
                                           erased_age_at_start=self.details.age_at_start)
            case _:
                pass  # unknown (future) event types are ignored so old code can replay new streams
