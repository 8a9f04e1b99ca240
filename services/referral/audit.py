"""The evidence pack of one referral: every step across the services, in order, with reasons.

Pure: it takes the events (from the stores, or from the referral service's audit trail) and
builds the timeline a tribunal reads — raised, amended, who was invited and why, declines, offers,
every shortlist with its explanation and policy version, the award and its justification,
closure, and every notification sent and what became of it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from shared.events import Envelope

CHILD_FIELDS = ("child_ref", "birth_date")


def relevant(referral_id: str, envelope: Envelope, notification_ids: set[str]) -> bool:
    """Does this event belong to the referral's story? (delivery records via their notification)"""
    if envelope.subject == referral_id or envelope.data.get("referral_id") == referral_id:
        return True
    return envelope.type == "delivery-recorded" and envelope.data.get("notification_id") in notification_ids


def select_events(referral_id: str, events: Iterable[Envelope]) -> list[Envelope]:
    events = list(events)
    notification_ids = {e.subject for e in events
                        if e.type == "notification-requested" and e.data.get("referral_id") == referral_id}
    return [e for e in events if relevant(referral_id, e, notification_ids)]


def _step(envelope: Envelope, people: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    d = envelope.data
    person = people.get(envelope.actorid or "") or {}
    # who did it: the role:tenant, the token's sub, and (from the actors table, never from the event) the name
    base = {"time": envelope.time, "type": envelope.type, "source": envelope.source, "actor": envelope.actor,
            "actorid": envelope.actorid, "by": {"sub": envelope.actorid, "name": person.get("name"),
                                                "username": person.get("username")} if envelope.actorid else None,
            "event_id": envelope.id}
    t = envelope.type
    if t == "referral-raised":
        summary = {k: v for k, v in d.items() if k not in CHILD_FIELDS and k != "child"}
        return base | {"what": f"Referral raised by {d.get('borough')} for {d.get('primary_need')} "
                                f"({d.get('placement_type')}) from {d.get('required_from')}", "details": summary}
    if t == "referral-amended":
        changes = {k: v for k, v in (d.get("changes") or {}).items() if k not in CHILD_FIELDS}
        return base | {"what": f"Amended: {', '.join(sorted(changes)) or 'child details'}", "details": changes}
    if t == "referral-matched":
        failed = {r["provider_id"]: sorted(k for k, ok in r["rules"].items() if not ok)
                  for r in d.get("results", []) if not r.get("eligible")}
        return base | {"what": f"{len(d.get('newly_invited', []))} provider(s) newly invited "
                                f"({len(d.get('invited', []))} in all) after {d.get('trigger')}",
                       "details": {"invited": d.get("invited"), "newly_invited": d.get("newly_invited"),
                                   "not_eligible": failed, "rules": d.get("results")}}
    if t == "invitation-declined":
        return base | {"what": f"Provider {d.get('provider_id')} declined: {d.get('reason')}", "details": d}
    if t == "offer-submitted":
        return base | {"what": f"Offer {d.get('offer_id')} from provider {d.get('provider_id')}: "
                                f"£{int(d.get('weekly_fee_pence', 0)) / 100:,.2f} a week from {d.get('start_date')}",
                       "details": d}
    if t == "offer-withdrawn":
        return base | {"what": f"Offer {d.get('offer_id')} withdrawn by provider {d.get('provider_id')}", "details": d}
    if t == "shortlist-ranked":
        return base | {"what": f"Shortlist ranked under policy version {d.get('policy_version')}: "
                                f"{len(d.get('entries', []))} offer(s)",
                       "details": d, "shortlist": d.get("entries", [])}
    if t == "decision-recorded":
        return base | {"what": f"Decision record ({d.get('decision')}) with its inputs", "details": d.get("inputs")}
    if t == "placement-awarded":
        override = d.get("top_ranked_offer_id") not in (None, d.get("offer_id"))
        why = f" — justification: {d.get('justification')}" if d.get("justification") else ""
        over = f" over the top-ranked offer {d.get('top_ranked_offer_id')}" if override else ""
        return base | {"what": f"Awarded offer {d.get('offer_id')} (provider {d.get('provider_id')}){over}{why}",
                       "details": d}
    if t == "referral-withdrawn":
        return base | {"what": f"Referral withdrawn: {d.get('reason') or 'no reason given'}", "details": d}
    if t == "referral-closed":
        return base | {"what": "Closed unfilled" if d.get("unfilled") else "Closed by the borough", "details": d}
    if t == "notification-requested":
        r = d.get("recipient") or {}
        return base | {"what": f"Notification {d.get('webhook_type')} to {r.get('role')} {r.get('tenant')}",
                       "details": {"notification_id": d.get("notification_id")}}
    if t == "delivery-recorded":
        return base | {"what": f"{d.get('channel')} delivery of {d.get('webhook_type')} {d.get('status')} "
                                f"after {d.get('attempts')} attempt(s)", "details": d}
    if t == "personal-data-erased":
        return base | {"what": "Child-identifying details erased on request", "details": d}
    return None


def build_audit_pack(referral_id: str, events: Iterable[Envelope],
                     people: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The evidence pack as JSON-ready data. Events are ordered by time, then source order.
    `people`: who each `actorid` is (`shared.store.people_of`), named in each step's `by`."""
    chosen = select_events(referral_id, events)
    ordered = sorted(enumerate(chosen), key=lambda pair: (pair[1].time, pair[0]))
    timeline = [step for _, e in ordered if (step := _step(e, people or {})) is not None]
    by_type: dict[str, list[dict[str, Any] | None]] = {}
    for step in timeline:
        by_type.setdefault(step["type"], []).append(step)
    award = (by_type.get("placement-awarded") or [None])[-1]
    return {
        "referral_id": referral_id,
        "raised": (by_type.get("referral-raised") or [None])[0],
        "amendments": by_type.get("referral-amended", []),
        "invitations": by_type.get("referral-matched", []),
        "declines": by_type.get("invitation-declined", []),
        "offers": by_type.get("offer-submitted", []) + by_type.get("offer-withdrawn", []),
        "shortlists": by_type.get("shortlist-ranked", []),
        "award": award,
        "justification": award["details"].get("justification") if award is not None else None,
        "closure": (by_type.get("referral-closed") or by_type.get("referral-withdrawn") or [None])[-1],
        "notifications": by_type.get("notification-requested", []),
        "deliveries": by_type.get("delivery-recorded", []),
        "timeline": timeline,
    }


_templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(["html", "j2"]))


def render_html(pack: dict[str, Any]) -> str:
    return _templates.get_template("audit.html.j2").render(pack=pack)
