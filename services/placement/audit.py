"""The placement service's part of a referral's audit pack: each placement the referral led to,
with its history — opening, start, funding decisions, reviews (outcomes and needs re-scored), fee
changes, review notices, and its ending or collapse — in the order recorded.

Pure, like `services/referral/audit.py`: it takes the events (from the stores or the topics)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.events import Envelope
from shared.vocabulary import NOTIFICATION_REQUESTED

SOURCE = "placematch/placement"


def _what(envelope: Envelope) -> str:
    d = envelope.data
    t = envelope.type
    if t == "placement-opened":
        how = "off-framework (" + str(d.get("off_framework_reason")) + ")" if d.get("origin") == "off_framework" \
            else f"from the award of offer {d.get('offer_id')}"
        return f"Placement opened {how} with provider {d.get('provider_id')} at {d.get('weekly_fee_pence')}p a week"
    if t == "placement-started":
        return f"Started on {d.get('started_on')}"
    if t == "placement-ended":
        return f"Ended {d.get('ending')} on {d.get('ended_on')}: {d.get('reason')}"
    if t == "award-collapsed":
        nxt = f" — next: award offer {d.get('next_offer_id')}" if d.get("next") == "award_next_offer" \
            else f" — next: {d.get('next')}"
        return f"Award collapsed before the start ({d.get('reason')}){nxt}"
    if t == "funding-agreed":
        streams = ", ".join(f"{c['stream']} {c['weekly_pence']}p" for c in d.get("contributions") or [])
        return f"Funding {d.get('decision')} by {d.get('decided_by')} until {d.get('agreed_until')}: {streams}"
    if t == "placement-reviewed":
        achieved = sum(1 for o in d.get("outcomes") or [] if o.get("progress") == "achieved")
        return (f"Reviewed on {d.get('reviewed_on')}: {achieved} of {len(d.get('outcomes') or [])} outcome(s) "
                f"achieved; {'continues' if d.get('continues') else 'not to continue'}")
    if t == "placement-review-due":
        return f"Review due {d.get('review_due')}{' (overdue)' if d.get('overdue') else ''}"
    if t == "fee-change-requested":
        return (f"Fee change {d.get('change_id')} asked: {d.get('previous_weekly_fee_pence')}p -> "
                f"{d.get('weekly_fee_pence')}p from {d.get('effective_from')}")
    if t == "fee-change-decided":
        return f"Fee change {d.get('change_id')} {d.get('decision')}" + (
            f" at {d.get('weekly_fee_pence')}p" if d.get("weekly_fee_pence") is not None else "")
    return t


def placement_history(referral_id: str, events: Iterable[Envelope]) -> list[dict[str, Any]]:
    """Every placement of the referral, each with its steps (time, type, actor, what, details)."""
    placements: dict[str, dict[str, Any]] = {}
    for envelope in events:
        if (envelope.source != SOURCE or envelope.type == NOTIFICATION_REQUESTED
                or envelope.data.get("referral_id") != referral_id):
            continue
        entry = placements.setdefault(envelope.subject, {"placement_id": envelope.subject, "steps": []})
        entry["steps"].append({"time": envelope.time, "type": envelope.type, "actor": envelope.actor,
                               "event_id": envelope.id, "sequence": envelope.sequence,
                               "what": _what(envelope), "details": envelope.data})
    for entry in placements.values():
        entry["steps"].sort(key=lambda s: s["sequence"])
        first = entry["steps"][0]["details"]
        last = entry["steps"][-1]["type"]
        entry |= {"provider_id": first.get("provider_id"), "origin": first.get("origin"),
                  "outcome": {"placement-ended": "ended", "award-collapsed": "collapsed"}.get(last, "open")}
    return sorted(placements.values(), key=lambda p: (p["steps"][0]["time"], p["placement_id"]))
