"""The Placement aggregate: from award (or an off-framework purchase) to its ending.

A placement's stream (id = placement id) holds `placement-opened`, `placement-started`,
`placement-ended`, `award-collapsed`, `funding-agreed`, `placement-reviewed`,
`placement-review-due`, `fee-change-requested` and `fee-change-decided` (data in
shared/EVENTS.md). Commands check the rules and return events; `apply` folds them. Nothing here
reads a clock: "today" is passed in. Every event carries `borough` and `provider_id`, so whoever
consumes it can route it without state of its own. No `child_ref` or birth date ever enters.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Any, Final

from shared.aggregate import Aggregate, NewEvent
from shared.errors import InvalidTransition, NotFound, RuleViolation
from shared.inputs import EARLIEST_DATE, clean_text, is_blank, years_ahead
from shared.vocabulary import NEEDS_INDICATORS, NotificationRequest, Recipient, WebhookType

MAX_WEEKLY_FEE_PENCE: Final = 10_000_000
"""£100k a week, as for offers: anything above is a typing error."""
MAX_OUTCOMES: Final = 20
MAX_TEXT: Final = 2000
REVIEW_NOTICE_DAYS: Final = 14
"""A review due within this many days (or overdue) is listed and noticed (`placement-review-due`)."""
PLACEMENT_NAMESPACE = uuid.UUID("0b6f3f59-2f6c-4b8e-9a57-8f1f6c1c2d4e")


class Status(StrEnum):
    AWARDED = "awarded"  # opened, not started yet
    ACTIVE = "active"
    ENDED = "ended"
    COLLAPSED = "collapsed"


class Origin(StrEnum):
    AWARD = "award"
    OFF_FRAMEWORK = "off_framework"


class OffFrameworkReason(StrEnum):
    TRIBUNAL_NAMED = "tribunal_named"
    PARENTAL_PREFERENCE = "parental_preference"
    PROVIDER_NOT_ENROLLED = "provider_not_enrolled"
    OTHER = "other"


class Ending(StrEnum):
    PLANNED = "planned"
    UNPLANNED = "unplanned"


class EndReason(StrEnum):
    # planned
    OUTCOMES_MET = "outcomes_met"
    STEP_DOWN = "step_down"
    MOVED_ON = "moved_on"
    AGE_TRANSITION = "age_transition"
    # unplanned
    BREAKDOWN = "breakdown"
    PROVIDER_NOTICE = "provider_notice"
    NEEDS_CHANGED = "needs_changed"
    MOVED_IN_HOUSE = "moved_in_house"
    SAFEGUARDING = "safeguarding"
    # either
    OTHER = "other"


END_REASONS: Final[dict[Ending, frozenset[EndReason]]] = {
    Ending.PLANNED: frozenset({EndReason.OUTCOMES_MET, EndReason.STEP_DOWN, EndReason.MOVED_ON,
                               EndReason.AGE_TRANSITION, EndReason.OTHER}),
    Ending.UNPLANNED: frozenset({EndReason.BREAKDOWN, EndReason.PROVIDER_NOTICE, EndReason.NEEDS_CHANGED,
                                 EndReason.MOVED_IN_HOUSE, EndReason.SAFEGUARDING, EndReason.OTHER}),
}


class CollapseReason(StrEnum):
    PROVIDER_WITHDREW = "provider_withdrew"
    START_FAILED = "start_failed"
    OTHER = "other"


class NextStep(StrEnum):
    AWARD_NEXT_OFFER = "award_next_offer"
    REOPEN = "reopen"
    NONE = "none"  # off-framework placements: there is no referral to go back to


class Stream(StrEnum):
    EDUCATION = "education"
    SOCIAL_CARE = "social_care"
    HEALTH = "health"


class Progress(StrEnum):
    NOT_STARTED = "not_started"
    PROGRESSING = "progressing"
    ACHIEVED = "achieved"


class FeeDecision(StrEnum):
    AGREED = "agreed"
    AGREED_IN_PART = "agreed_in_part"
    DECLINED = "declined"


def awarded_placement_id(referral_id: str, offer_id: str) -> str:
    """The id of the placement an award opens: the same on every redelivery and replay, and a new
    one when a collapsed award is followed by the award of another offer."""
    return str(uuid.uuid5(PLACEMENT_NAMESPACE, f"{referral_id}|{offer_id}"))


# --------------------------------------------------------------------------- input rules

def _violation(field: str, rule: str, detail: str) -> RuleViolation:
    return RuleViolation(detail, field=field, rule=rule)


def _fee(value: int, field: str = "weekly_fee_pence") -> int:
    if not 1 <= value <= MAX_WEEKLY_FEE_PENCE:
        raise _violation(field, "range", f"'{field}' must be between 1 and {MAX_WEEKLY_FEE_PENCE} pence a week")
    return value


def _plausible(value: date, field: str, today: date) -> date:
    if not EARLIEST_DATE <= value <= years_ahead(today):
        raise _violation(field, "plausible_date",
                         f"'{field}' must be between {EARLIEST_DATE} and {years_ahead(today)}")
    return value


def _text(value: str | None, field: str, *, required: bool) -> str | None:
    if value is None or is_blank(value):
        if required:
            raise _violation(field, "required", f"'{field}' must say something")
        return None
    if len(value) > MAX_TEXT:
        raise _violation(field, "max_length", f"'{field}' must be at most {MAX_TEXT} characters")
    return clean_text(value)


def needs_profile_of(value: Mapping[str, int], field: str = "needs_profile") -> dict[str, int]:
    """The 12 Valuing Care indicators, each 0-3, all of them."""
    for key in value:
        if key not in NEEDS_INDICATORS:
            raise _violation(f"{field}.{key}", "unknown_indicator", f"'{key}' is not a Valuing Care indicator")
    profile: dict[str, int] = {}
    for key in NEEDS_INDICATORS:
        if key not in value:
            raise _violation(f"{field}.{key}", "required", f"'{field}.{key}' is required (0-3)")
        if not 0 <= value[key] <= 3:
            raise _violation(f"{field}.{key}", "range", f"'{field}.{key}' must be between 0 and 3")
        profile[key] = int(value[key])
    return profile


def outcomes_of(values: Sequence[str], field: str = "outcomes") -> list[str]:
    if len(values) > MAX_OUTCOMES:
        raise _violation(field, "max_items", f"at most {MAX_OUTCOMES} outcomes")
    cleaned = []
    for i, text in enumerate(values):
        cleaned.append(_text(text, f"{field}.{i}", required=True))
    if len(set(cleaned)) != len(cleaned):
        raise _violation(field, "unique", "each outcome may be listed once")
    return [c for c in cleaned if c is not None]


# --------------------------------------------------------------------------- value objects

@dataclass(frozen=True)
class Contribution:
    stream: Stream
    weekly_pence: int
    icb_code: str | None = None

    def as_data(self) -> dict[str, Any]:
        return {"stream": self.stream.value, "weekly_pence": self.weekly_pence, "icb_code": self.icb_code}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Contribution:
        return cls(Stream(data["stream"]), int(data["weekly_pence"]), data.get("icb_code"))


@dataclass(frozen=True)
class OutcomeRating:
    outcome: str
    progress: Progress
    note: str | None = None


@dataclass(frozen=True)
class ShortlistEntry:
    """One ranked offer of the referral's last shortlist (from matching's `shortlist-ranked`)."""

    rank: int
    offer_id: str
    provider_id: str
    weekly_fee_pence: int


@dataclass(frozen=True)
class ReferralFacts:
    """What the placement keeps of a referral (from `referral-raised` / `referral-amended`)."""

    outcomes: list[str]
    needs_profile: dict[str, int]
    primary_need: str | None
    placement_type: str | None
    required_from: str | None


# --------------------------------------------------------------------------- the aggregate

class Placement(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.status: Status | None = None
        self.origin: Origin | None = None
        self.referral_id: str | None = None
        self.offer_id: str | None = None
        self.borough = ""
        self.provider_id = ""
        self.opened_on: date | None = None
        self.started_on: date | None = None
        self.ended_on: date | None = None
        self.outcomes: list[str] = []
        self.fees: list[tuple[date | None, int]] = []
        """(effective from, weekly fee) in the order agreed; None = from the start."""
        self.funding: dict[str, Any] | None = None
        self.review_due: date | None = None
        self.last_reviewed_on: date | None = None
        self.noticed: set[str] = set()
        self.fee_changes: dict[str, dict[str, Any]] = {}

    # ----------------------------------------------------------------- facts

    @property
    def opened(self) -> bool:
        return self.status is not None

    @property
    def live(self) -> bool:
        return self.status in (Status.AWARDED, Status.ACTIVE)

    @property
    def current_fee(self) -> int:
        """The fee of the latest agreement: what funding must add up to."""
        return fee_in_force(self.fees, date.max)

    def fee_on(self, day: date) -> int:
        return fee_in_force(self.fees, day)

    @property
    def pending_fee_change(self) -> str | None:
        return next((cid for cid, c in self.fee_changes.items() if c["status"] == "requested"), None)

    def _route(self) -> dict[str, Any]:
        return {"borough": self.borough, "provider_id": self.provider_id, "referral_id": self.referral_id}

    def _require(self, *allowed: Status, doing: str) -> None:
        if not self.opened:
            raise NotFound(f"placement {self.id} not found", field="placement_id")
        if self.status not in allowed:
            raise InvalidTransition(f"cannot {doing} a placement that is {self.status}; it must be "
                                    f"{' or '.join(s.value for s in allowed)}", field="status", rule="state")

    # ----------------------------------------------------------------- opening

    def open_from_award(self, award: Mapping[str, Any], referral_id: str, facts: ReferralFacts | None,
                        awarded_at: str) -> list[NewEvent]:
        """`placement-awarded` opens the placement; a second time it changes nothing."""
        if self.opened:
            return []
        fee = int(award["weekly_fee_pence"])
        if not 1 <= fee <= MAX_WEEKLY_FEE_PENCE:
            raise ValueError(f"awarded fee {fee} out of range")
        return [NewEvent("placement-opened", {
            "placement_id": self.id, "origin": Origin.AWARD.value, "referral_id": referral_id,
            "offer_id": str(award["offer_id"]), "borough": str(award["borough"]),
            "provider_id": str(award["provider_id"]), "provider_name": None, "weekly_fee_pence": fee,
            "planned_start": facts.required_from if facts else None,
            "primary_need": facts.primary_need if facts else None,
            "placement_type": facts.placement_type if facts else None,
            "outcomes": list(facts.outcomes) if facts else [],
            "needs_profile": dict(facts.needs_profile) if facts else {},
            "off_framework_reason": None, "off_framework_note": None,
            "justification": award.get("justification"), "opened_at": awarded_at,
        })]

    def open_off_framework(self, *, borough: str, provider_id: str | None, provider_name: str | None,
                           weekly_fee_pence: int, planned_start: date, primary_need: str | None,
                           placement_type: str | None, outcomes: Sequence[str], needs_profile: Mapping[str, int],
                           reason: OffFrameworkReason, note: str | None, referral_id: str | None,
                           today: date, opened_at: str) -> list[NewEvent]:
        """A place bought outside the DPS (a tribunal names a school, parents prefer one): it counts
        in spend and intelligence, flagged off-framework."""
        if self.opened:
            raise InvalidTransition(f"placement {self.id} exists already", field="placement_id", rule="exists")
        name = _text(provider_name, "provider_name", required=False)
        if provider_id is None and name is None:
            raise _violation("provider_name", "required", "name the provider (provider_id if it is enrolled, "
                                                           "else provider_name)")
        why = _text(note, "note", required=reason is OffFrameworkReason.OTHER)
        return [NewEvent("placement-opened", {
            "placement_id": self.id, "origin": Origin.OFF_FRAMEWORK.value, "referral_id": referral_id,
            "offer_id": None, "borough": borough,
            "provider_id": provider_id or f"off-framework:{name}", "provider_name": name,
            "weekly_fee_pence": _fee(weekly_fee_pence),
            "planned_start": _plausible(planned_start, "planned_start", today).isoformat(),
            "primary_need": primary_need, "placement_type": placement_type,
            "outcomes": outcomes_of(outcomes), "needs_profile": needs_profile_of(needs_profile),
            "off_framework_reason": reason.value, "off_framework_note": why,
            "justification": None, "opened_at": opened_at,
        })]

    # ----------------------------------------------------------------- lifecycle

    def start(self, started_on: date, today: date) -> list[NewEvent]:
        self._require(Status.AWARDED, doing="start")
        _plausible(started_on, "started_on", today)
        if started_on > today:
            raise _violation("started_on", "not_future", "a placement starts when the child arrives: "
                                                         "'started_on' cannot be after today")
        if self.origin is Origin.AWARD and self.opened_on and started_on < self.opened_on:
            raise _violation("started_on", "after_award", f"'started_on' cannot be before the award ({self.opened_on})")
        return [NewEvent("placement-started", {**self._route(), "started_on": started_on.isoformat(),
                                               "weekly_fee_pence": self.fee_on(started_on)})]

    def end(self, ended_on: date, ending: Ending, reason: EndReason, note: str | None, today: date) -> list[NewEvent]:
        if self.status is Status.AWARDED:
            raise InvalidTransition("the placement has not started: record the award's collapse instead "
                                    "(POST /placements/{id}/collapse)", field="status", rule="not_started")
        self._require(Status.ACTIVE, doing="end")
        if reason not in END_REASONS[ending]:
            allowed = ", ".join(sorted(r.value for r in END_REASONS[ending]))
            raise _violation("reason", "reason_for_ending", f"a {ending} ending has one of the reasons {allowed}")
        _plausible(ended_on, "ended_on", today)
        assert self.started_on is not None
        if ended_on < self.started_on:
            raise _violation("ended_on", "after_start", f"'ended_on' cannot be before the start ({self.started_on})")
        why = _text(note, "note", required=reason is EndReason.OTHER)
        return [NewEvent("placement-ended", {
            **self._route(), "ended_on": ended_on.isoformat(), "ending": ending.value, "reason": reason.value,
            "note": why, "started_on": self.started_on.isoformat(),
            "days": (ended_on - self.started_on).days,
        })]

    def collapse(self, reason: CollapseReason, note: str | None, next_step: NextStep, next_offer_id: str | None,
                 justification: str | None, shortlist: Sequence[ShortlistEntry] | None) -> list[NewEvent]:
        """Before the start the provider withdraws or the start fails: the award collapses, and the
        borough says what comes next. Awarding the next offer follows DESIGN.md's justification rule
        against the remaining ranking: any offer but the best remaining one needs a justification."""
        if self.status is Status.ACTIVE:
            raise InvalidTransition("the placement has started: end it instead (POST /placements/{id}/end)",
                                    field="status", rule="started")
        self._require(Status.AWARDED, doing="collapse")
        why = _text(note, "note", required=reason is CollapseReason.OTHER)
        reasoned = _text(justification, "justification", required=False)
        if self.origin is Origin.OFF_FRAMEWORK and next_step is not NextStep.NONE:
            raise _violation("next", "off_framework", "an off-framework placement has no shortlist to go back to: "
                                                      "'next' must be none")
        if self.origin is Origin.AWARD and next_step is NextStep.NONE:
            raise _violation("next", "one_of", "say what comes next: award_next_offer or reopen")
        top_remaining: str | None = None
        next_provider: str | None = None
        if next_step is NextStep.AWARD_NEXT_OFFER:
            if shortlist is None:
                raise InvalidTransition("the referral's shortlist is not known here yet; try again shortly",
                                        field="next_offer_id", rule="shortlist_unknown")
            remaining = sorted((e for e in shortlist
                                if e.offer_id != self.offer_id and e.provider_id != self.provider_id),
                               key=lambda e: e.rank)
            if not remaining:
                raise InvalidTransition("no other offer remains on the shortlist: reopen the referral instead",
                                        field="next", rule="no_remaining_offers")
            if next_offer_id is None:
                raise _violation("next_offer_id", "required", "name the offer to award next")
            chosen = next((e for e in remaining if e.offer_id == next_offer_id), None)
            if chosen is None:
                raise _violation("next_offer_id", "on_shortlist",
                                 f"offer {next_offer_id} is not among the remaining ranked offers")
            top_remaining = remaining[0].offer_id
            if chosen.offer_id != top_remaining and reasoned is None:
                raise _violation("justification", "required_when_not_top",
                                 f"offer {top_remaining} is the best remaining; awarding another needs a justification")
            next_provider = chosen.provider_id
        elif next_offer_id is not None:
            raise _violation("next_offer_id", "only_with_award_next_offer",
                             "'next_offer_id' goes with next = award_next_offer")
        return [NewEvent("award-collapsed", {
            **self._route(), "offer_id": self.offer_id, "reason": reason.value, "note": why,
            "next": next_step.value, "next_offer_id": next_offer_id, "next_provider_id": next_provider,
            "top_remaining_offer_id": top_remaining, "justification": reasoned,
        })]

    # ----------------------------------------------------------------- funding

    def agree_funding(self, contributions: Sequence[Contribution], agreed_from: date, agreed_until: date,
                      review_due: date, decided_by: str, today: date) -> list[NewEvent]:
        """A panel decision: contributions by stream that add up to the fee, for a time-limited period
        with a review before it ends. First `agreed`, then `extended` (same shares, later end) or `changed`."""
        self._require(Status.AWARDED, Status.ACTIVE, doing="fund")
        if not contributions:
            raise _violation("contributions", "required", "at least one stream must contribute")
        seen: set[Stream] = set()
        for i, c in enumerate(contributions):
            if c.stream in seen:
                raise _violation(f"contributions.{i}.stream", "unique", f"{c.stream} is listed twice")
            seen.add(c.stream)
            if not 0 <= c.weekly_pence <= MAX_WEEKLY_FEE_PENCE:
                raise _violation(f"contributions.{i}.weekly_pence", "range",
                                 f"a contribution is 0 to {MAX_WEEKLY_FEE_PENCE} pence a week")
            if c.icb_code is not None and c.stream is not Stream.HEALTH:
                raise _violation(f"contributions.{i}.icb_code", "health_only",
                                 "only a health contribution names a health body (ICB code)")
        total = sum(c.weekly_pence for c in contributions)
        fee = self.current_fee
        if total != fee:
            raise _violation("contributions", "sum_to_fee",
                             f"contributions add up to {total} pence a week; the weekly fee is {fee}")
        for name, value in (("agreed_from", agreed_from), ("agreed_until", agreed_until), ("review_due", review_due)):
            _plausible(value, name, today)
        if agreed_until <= agreed_from:
            raise _violation("agreed_until", "after_agreed_from", "'agreed_until' must be after 'agreed_from'")
        if not agreed_from <= review_due <= agreed_until:
            raise _violation("review_due", "within_agreement",
                             "the review falls within the agreement: agreed_from <= review_due <= agreed_until")
        shares = sorted((c.as_data() for c in contributions), key=lambda c: c["stream"])
        previous = self.funding
        if previous is None:
            decision = "agreed"
        elif previous["contributions"] == shares and previous["agreed_from"] == agreed_from.isoformat():
            if agreed_until.isoformat() <= previous["agreed_until"]:
                if (agreed_until.isoformat(), review_due.isoformat()) == (previous["agreed_until"],
                                                                          previous["review_due"]):
                    raise InvalidTransition("this funding is already agreed", field="contributions", rule="unchanged")
                decision = "changed"
            else:
                decision = "extended"
        else:
            decision = "changed"
        return [NewEvent("funding-agreed", {
            **self._route(), "decision": decision, "contributions": shares, "weekly_fee_pence": fee,
            "agreed_from": agreed_from.isoformat(), "agreed_until": agreed_until.isoformat(),
            "review_due": review_due.isoformat(), "decided_by": decided_by,
        })]

    # ----------------------------------------------------------------- reviews

    def review(self, *, review_id: str, reviewed_on: date, ratings: Sequence[OutcomeRating],
               needs_profile: Mapping[str, int], continues: bool, next_review_due: date | None,
               note: str | None, today: date) -> list[NewEvent]:
        """Every outcome of the placement rated once, the 12 indicators scored again."""
        self._require(Status.ACTIVE, doing="review")
        _plausible(reviewed_on, "reviewed_on", today)
        if reviewed_on > today:
            raise _violation("reviewed_on", "not_future", "a review is recorded once it has taken place")
        assert self.started_on is not None
        if reviewed_on < self.started_on:
            raise _violation("reviewed_on", "after_start",
                             f"'reviewed_on' cannot be before the start ({self.started_on})")
        if self.last_reviewed_on and reviewed_on < self.last_reviewed_on:
            raise _violation("reviewed_on", "after_last_review",
                             f"'reviewed_on' cannot be before the last review ({self.last_reviewed_on})")
        rated: dict[str, dict[str, Any]] = {}
        for i, r in enumerate(ratings):
            outcome = clean_text(r.outcome)
            if outcome not in self.outcomes:
                raise _violation(f"outcomes.{i}.outcome", "known_outcome",
                                 f"{outcome!r} is not one of the placement's outcomes")
            if outcome in rated:
                raise _violation(f"outcomes.{i}.outcome", "unique", f"{outcome!r} is rated twice")
            rated[outcome] = {"outcome": outcome, "progress": r.progress.value,
                              "note": _text(r.note, f"outcomes.{i}.note", required=False)}
        missing = [o for o in self.outcomes if o not in rated]
        if missing:
            raise _violation("outcomes", "every_outcome", f"rate every outcome; missing: {'; '.join(missing)}")
        if next_review_due is not None:
            _plausible(next_review_due, "next_review_due", today)
            if next_review_due <= reviewed_on:
                raise _violation("next_review_due", "after_review", "'next_review_due' must be after 'reviewed_on'")
        return [NewEvent("placement-reviewed", {
            **self._route(), "review_id": review_id, "reviewed_on": reviewed_on.isoformat(),
            "outcomes": [rated[o] for o in self.outcomes], "needs_profile": needs_profile_of(needs_profile),
            "continues": continues, "next_review_due": next_review_due.isoformat() if next_review_due else None,
            "note": _text(note, "note", required=False),
        })]

    def notice_review_due(self, today: date) -> list[NewEvent]:
        """Once per due date, when a started placement's review is due within 14 days or overdue."""
        if self.status is not Status.ACTIVE or self.review_due is None:
            return []
        due = self.review_due.isoformat()
        if due in self.noticed or self.review_due - today > timedelta(days=REVIEW_NOTICE_DAYS):
            return []
        return [NewEvent("placement-review-due", {**self._route(), "review_due": due,
                                                  "overdue": self.review_due < today, "noticed_on": today.isoformat()})]

    # ----------------------------------------------------------------- fee changes

    def request_fee_change(self, *, change_id: str, weekly_fee_pence: int, effective_from: date, reason: str,
                           today: date) -> list[NewEvent]:
        """The provider asks for a new fee (an annual uplift) from a date; one request at a time."""
        self._require(Status.AWARDED, Status.ACTIVE, doing="change the fee of")
        pending = self.pending_fee_change
        if pending is not None:
            raise InvalidTransition(f"fee change {pending} awaits the borough's decision", field="change_id",
                                    rule="pending_fee_change")
        _fee(weekly_fee_pence)
        _plausible(effective_from, "effective_from", today)
        starts = self.started_on or self.opened_on
        if starts and effective_from < starts:
            raise _violation("effective_from", "after_start", f"'effective_from' cannot be before {starts}")
        in_force = self.fee_on(effective_from)
        if weekly_fee_pence == in_force:
            raise _violation("weekly_fee_pence", "changed", f"the fee on {effective_from} is already {in_force}")
        return [NewEvent("fee-change-requested", {
            **self._route(), "change_id": change_id, "weekly_fee_pence": weekly_fee_pence,
            "previous_weekly_fee_pence": in_force, "effective_from": effective_from.isoformat(),
            "reason": _text(reason, "reason", required=True),
        })]

    def decide_fee_change(self, *, change_id: str, decision: FeeDecision, weekly_fee_pence: int | None,
                          note: str | None) -> list[NewEvent]:
        """The borough agrees, agrees in part (a fee between the old and the asked one), or declines."""
        if not self.opened:
            raise NotFound(f"placement {self.id} not found", field="placement_id")
        change = self.fee_changes.get(change_id)
        if change is None:
            raise NotFound(f"fee change {change_id} not found", field="change_id")
        if change["status"] != "requested":
            raise InvalidTransition(f"fee change {change_id} was decided already ({change['status']})",
                                    field="change_id", rule="decided")
        self._require(Status.AWARDED, Status.ACTIVE, doing="decide a fee change of")
        asked, before = change["weekly_fee_pence"], change["previous_weekly_fee_pence"]
        agreed: int | None
        if decision is FeeDecision.AGREED:
            if weekly_fee_pence not in (None, asked):
                raise _violation("weekly_fee_pence", "as_requested", "agreeing takes the fee asked; agree in part "
                                                                     "for another")
            agreed = asked
        elif decision is FeeDecision.AGREED_IN_PART:
            if weekly_fee_pence is None:
                raise _violation("weekly_fee_pence", "required", "agreeing in part names the fee agreed")
            if not min(asked, before) < weekly_fee_pence < max(asked, before):
                raise _violation("weekly_fee_pence", "between",
                                 f"a fee agreed in part lies strictly between {before} and {asked}")
            agreed = weekly_fee_pence
        else:
            if weekly_fee_pence is not None:
                raise _violation("weekly_fee_pence", "not_with_decline", "a declined change agrees no fee")
            agreed = None
        return [NewEvent("fee-change-decided", {
            **self._route(), "change_id": change_id, "decision": decision.value, "weekly_fee_pence": agreed,
            "requested_weekly_fee_pence": asked, "previous_weekly_fee_pence": before,
            "effective_from": change["effective_from"],
            "note": _text(note, "note", required=decision is not FeeDecision.AGREED),
        })]

    # ----------------------------------------------------------------- folding

    def apply(self, type: str, data: dict[str, Any]) -> None:
        if type == "placement-opened":
            self.status = Status.AWARDED
            self.origin = Origin(data["origin"])
            self.referral_id = data.get("referral_id")
            self.offer_id = data.get("offer_id")
            self.borough = data["borough"]
            self.provider_id = data["provider_id"]
            self.opened_on = date.fromisoformat(str(data["opened_at"])[:10])
            self.outcomes = list(data.get("outcomes") or [])
            self.fees = [(None, int(data["weekly_fee_pence"]))]
        elif type == "placement-started":
            self.status = Status.ACTIVE
            self.started_on = date.fromisoformat(data["started_on"])
        elif type == "placement-ended":
            self.status = Status.ENDED
            self.ended_on = date.fromisoformat(data["ended_on"])
        elif type == "award-collapsed":
            self.status = Status.COLLAPSED
        elif type == "funding-agreed":
            self.funding = {k: data[k] for k in ("contributions", "agreed_from", "agreed_until", "review_due")}
            self.review_due = date.fromisoformat(data["review_due"])
        elif type == "placement-reviewed":
            self.last_reviewed_on = date.fromisoformat(data["reviewed_on"])
            self.review_due = date.fromisoformat(data["next_review_due"]) if data.get("next_review_due") else None
        elif type == "placement-review-due":
            self.noticed.add(data["review_due"])
        elif type == "fee-change-requested":
            self.fee_changes[data["change_id"]] = {**data, "status": "requested"}
        elif type == "fee-change-decided":
            self.fee_changes[data["change_id"]]["status"] = data["decision"]
            if data.get("weekly_fee_pence") is not None:
                self.fees.append((date.fromisoformat(data["effective_from"]), int(data["weekly_fee_pence"])))


# --------------------------------------------------------------------------- fees and spend

def fee_in_force(fees: Iterable[tuple[date | None, int]], day: date) -> int:
    """The fee of the latest agreement effective on `day` (agreements in the order made)."""
    chosen: tuple[date, int] | None = None
    for effective, fee in fees:
        start = effective or date.min
        if start <= day and (chosen is None or start >= chosen[0]):
            chosen = (start, fee)
    return chosen[1] if chosen else 0


@dataclass(frozen=True)
class SpendFacts:
    """What spend needs of a placement (from its view)."""

    placement_id: str
    borough: str
    provider_id: str
    off_framework: bool
    started_on: date | None
    ended_on: date | None
    fees: list[tuple[date | None, int]]
    fundings: list[tuple[date, list[Contribution]]]
    """Funding agreements as (agreed from, contributions), in the order agreed."""


def spend(facts: SpendFacts, first: date, last: date) -> dict[str, Fraction]:
    """Spend of one placement over the days `first`..`last` (both included) by stream, in exact
    pence: each day costs the weekly fee in force that day / 7, shared between the streams as the
    funding agreement in force that day shares it (`unfunded` without one). A placement costs from
    its start day up to the day before it ends."""
    if facts.started_on is None:
        return {}
    begin = max(first, facts.started_on)
    end = min(last, facts.ended_on - timedelta(days=1)) if facts.ended_on else last
    if end < begin:
        return {}
    cuts = {begin, end + timedelta(days=1)}
    cuts |= {d for d, _ in facts.fees if d is not None and begin < d <= end}
    cuts |= {d for d, _ in facts.fundings if begin < d <= end}
    edges = sorted(cuts)
    totals: dict[str, Fraction] = {}
    for start, stop in zip(edges, edges[1:], strict=False):
        days = (stop - start).days
        cost = Fraction(fee_in_force(facts.fees, start) * days, 7)
        shares = _funding_on(facts.fundings, start)
        whole_share = sum(c.weekly_pence for c in shares)
        if not shares or whole_share == 0:
            totals["unfunded"] = totals.get("unfunded", Fraction(0)) + cost
            continue
        for c in shares:
            totals[c.stream.value] = totals.get(c.stream.value, Fraction(0)) + cost * Fraction(c.weekly_pence,
                                                                                               whole_share)
    return totals


def _funding_on(fundings: Iterable[tuple[date, list[Contribution]]], day: date) -> list[Contribution]:
    chosen: tuple[date, list[Contribution]] | None = None
    for start, shares in fundings:
        if start <= day and (chosen is None or start >= chosen[0]):
            chosen = (start, shares)
    return chosen[1] if chosen else []


def pence(amount: Fraction) -> int:
    """Exact pence rounded half up to whole pence."""
    return int((amount * 2 + 1) // 2) if amount >= 0 else -int((-amount * 2 + 1) // 2)


# --------------------------------------------------------------------------- notifications (issue 16 item 8)

NOTIFICATION_NAMESPACE = uuid.UUID("0f3c2a71-6d4e-4b8f-a1c9-2e7d5b9f8c34")
WEBHOOKS: Mapping[str, WebhookType] = {
    "placement-started": WebhookType.PLACEMENT_STARTED,
    "placement-ended": WebhookType.PLACEMENT_ENDED,
    "placement-review-due": WebhookType.PLACEMENT_REVIEW_DUE,
    "fee-change-requested": WebhookType.FEE_CHANGE_REQUESTED,
    "fee-change-decided": WebhookType.FEE_CHANGE_DECIDED,
    "award-collapsed": WebhookType.AWARD_COLLAPSED,
}
"""The placement events the borough and the provider of the placement hear about."""
OFF_FRAMEWORK_PREFIX: Final = "off-framework:"
PROVIDER_HIDDEN_ON_COLLAPSE: Final = ("next_offer_id", "next_provider_id", "top_remaining_offer_id", "justification")


def placement_notifications(event_id: str, placement_id: str, type_: str,
                            data: Mapping[str, Any]) -> list[NotificationRequest]:
    """`notification-requested` to the borough and to the provider of the placement (never to an
    off-framework provider not enrolled: it has no tenant). The data is the event's, with
    `placement_id`; the provider's copy of `award.collapsed` leaves out whom the borough turned to
    next, as `GET /placements/{id}` does. Nothing about the child: the service holds none. Ids are
    uuid5 of (event id, placement id, webhook type, recipient), stable across a replay."""
    webhook = WEBHOOKS.get(type_)
    if webhook is None:
        return []
    body = {"placement_id": placement_id, **data}
    recipients = [("borough", str(data["borough"]), body)]
    provider_id = str(data["provider_id"])
    if not provider_id.startswith(OFF_FRAMEWORK_PREFIX):
        shown = {k: v for k, v in body.items() if not (type_ == "award-collapsed" and k in PROVIDER_HIDDEN_ON_COLLAPSE)}
        recipients.append(("provider", provider_id, shown))
    referral_id = data.get("referral_id")
    return [NotificationRequest(
        str(uuid.uuid5(NOTIFICATION_NAMESPACE, f"{event_id}|{placement_id}|{webhook.value}|{role}|{tenant}")),
        webhook.value, Recipient(role, tenant), None, None if referral_id is None else str(referral_id), payload)
        for role, tenant, payload in recipients]
