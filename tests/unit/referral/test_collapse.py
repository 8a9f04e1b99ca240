"""Referral's reaction to placement's `award-collapsed`: the award revoked, then the next offer
awarded (what only the referral knows re-checked) or the referral reopened with a new deadline,
and the people concerned notified; a stale or repeated collapse changes nothing."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.referral import handlers, projections, service
from services.referral.domain import REOPEN_DAYS, Referral
from services.referral.offers import Shortlist
from services.referral.personal import SealingEventStore
from shared.aggregate import NewEvent
from shared.events import Envelope
from shared.migrations import upgrade
from shared.service import ServiceRuntime
from shared.settings import Settings

from .factories import DETAILS, NOW, PROVIDER_A, PROVIDER_B, PROVIDER_C, REFERRAL_ID, offer, raised

COLLAPSED_AT = datetime(2026, 6, 20, 12, 0, tzinfo=UTC)
PLACEMENT_ID = "7d3c1a9e-0000-5000-8000-000000000001"


def history() -> list[NewEvent]:
    """Raised; offers a (top, awarded), b and c standing; c ranked below b."""
    referral = Referral(REFERRAL_ID)
    events = referral.raise_referral("croydon", DETAILS, NOW)
    referral.mutate(events)
    for offer_id, provider_id, fee in (("offer-a", PROVIDER_A, 400000), ("offer-b", PROVIDER_B, 425000),
                                       ("offer-c", PROVIDER_C, 450000)):
        step = offer(referral, offer_id=offer_id, provider_id=provider_id, weekly_fee_pence=fee)
        referral.mutate(step)
        events += step
    step = referral.award(borough="croydon", offer_id="offer-a", justification=None,
                          shortlist=Shortlist(("offer-a", "offer-b", "offer-c")), suspended_providers=frozenset(),
                          now=NOW)
    return events + step


def awarded() -> Referral:
    return Referral(REFERRAL_ID).mutate(history())


def collapse(**changes: Any) -> dict[str, Any]:
    return {"borough": "croydon", "provider_id": PROVIDER_A, "referral_id": REFERRAL_ID, "offer_id": "offer-a",
            "reason": "provider_withdrew", "note": None, "next": "award_next_offer", "next_offer_id": "offer-c",
            "next_provider_id": PROVIDER_C, "top_remaining_offer_id": "offer-b",
            "justification": "Parental preference after the visit"} | changes


def react(referral: Referral, suspended: frozenset[str] = frozenset(), **changes: Any) -> list[Any]:
    return referral.after_collapse(collapse=collapse(**changes), placement_id=PLACEMENT_ID,
                                   suspended_providers=suspended, at=COLLAPSED_AT)


def test_the_next_offer_is_awarded_with_the_justification_placement_checked() -> None:
    referral = awarded()
    events = react(referral)
    assert [e.type for e in events] == ["award-revoked", "placement-awarded"]
    assert events[0].data == {"offer_id": "offer-a", "provider_id": PROVIDER_A, "placement_id": PLACEMENT_ID,
                              "reason": "provider_withdrew", "next": "award_next_offer", "borough": "croydon",
                              "revoked_at": "2026-06-20T12:00:00Z"}
    assert events[1].data == {
        "offer_id": "offer-c", "provider_id": PROVIDER_C, "weekly_fee_pence": 450000,
        "justification": "Parental preference after the visit", "top_ranked_offer_id": "offer-b",
        "not_selected": [{"offer_id": "offer-b", "provider_id": PROVIDER_B}], "borough": "croydon",
        "awarded_at": "2026-06-20T12:00:00Z", "after_collapse_of": "offer-a"}
    referral.mutate(events)
    assert (referral.status, referral.awarded_offer_id, referral.justification) == (
        "awarded", "offer-c", "Parental preference after the visit")
    assert {o.offer_id: o.status for o in referral.offers.values()} == {
        "offer-a": "collapsed", "offer-b": "not_selected", "offer-c": "awarded"}
    # the same collapse again (a redelivery past the journal, or a replayed copy) changes nothing
    assert react(referral) == []


def test_a_collapse_of_an_award_that_is_not_the_current_one_changes_nothing() -> None:
    referral = awarded()
    assert react(referral, offer_id="offer-b") == []
    assert raised().after_collapse(collapse=collapse(), placement_id=PLACEMENT_ID, suspended_providers=frozenset(),
                                   at=COLLAPSED_AT) == []


@pytest.mark.parametrize(("changes", "suspended"), [
    ({"next_offer_id": "offer-x"}, frozenset()),        # not an offer of this referral
    ({"next_offer_id": "offer-a"}, frozenset()),        # the collapsed offer itself
    ({}, frozenset({PROVIDER_C})),                      # suspended since the award
])
def test_a_next_offer_the_referral_cannot_award_reopens_it_instead(changes: dict[str, Any],
                                                                  suspended: frozenset[str]) -> None:
    referral = awarded()
    events = react(referral, suspended, **changes)
    assert [e.type for e in events] == ["award-revoked", "referral-reopened"]
    assert events[1].data["reason"] == "next_offer_unavailable"
    referral.mutate(events)
    assert referral.status == "open" and referral.awarded_offer_id is None


def test_reopen_takes_offers_again_until_a_new_deadline_and_the_standing_offers_can_be_awarded() -> None:
    referral = awarded()
    old_deadline = referral.details.offer_deadline if referral.details else None
    events = react(referral, next="reopen", next_offer_id=None, justification=None)
    assert [e.type for e in events] == ["award-revoked", "referral-reopened"]
    deadline = max(old_deadline, COLLAPSED_AT + timedelta(days=REOPEN_DAYS)) if old_deadline else None
    assert events[1].data == {
        "offer_deadline": deadline.strftime("%Y-%m-%dT%H:%M:%SZ") if deadline else None,
        "reason": "reopened_by_borough", "collapsed_offer_id": "offer-a", "borough": "croydon",
        "standing_offers": [{"offer_id": "offer-b", "provider_id": PROVIDER_B},
                            {"offer_id": "offer-c", "provider_id": PROVIDER_C}]}
    referral.mutate(events)
    assert referral.status == "open" and referral.details is not None and referral.details.offer_deadline == deadline
    assert {o.offer_id: o.status for o in referral.offers.values()} == {
        "offer-a": "collapsed", "offer-b": "submitted", "offer-c": "submitted"}
    again = referral.award(borough="croydon", offer_id="offer-b", justification=None,
                           shortlist=Shortlist(("offer-b", "offer-c"), frozenset({"offer-a"})),
                           suspended_providers=frozenset(), now=COLLAPSED_AT)
    assert again[0].data["offer_id"] == "offer-b" and again[0].data["not_selected"] == [
        {"offer_id": "offer-c", "provider_id": PROVIDER_C}]


def test_reopen_notifies_the_borough_and_each_standing_provider_of_its_own_offer_only() -> None:
    reopened = {"offer_deadline": "2026-07-04T12:00:00Z", "reason": "reopened_by_borough",
                "collapsed_offer_id": "offer-a", "standing_offers": [
                    {"offer_id": "offer-c", "provider_id": PROVIDER_C},
                    {"offer_id": "offer-b", "provider_id": PROVIDER_B}]}
    requests = service.reopen_notifications("cause-1", REFERRAL_ID, "croydon", reopened)
    assert [(r.webhook_type, r.recipient.role, r.recipient.tenant) for r in requests] == [
        ("referral.reopened", "borough", "croydon"), ("referral.reopened", "provider", PROVIDER_B),
        ("referral.reopened", "provider", PROVIDER_C)]
    assert requests[0].data["standing_offers"] == 2
    assert requests[1].data == {"referral_id": REFERRAL_ID, "offer_id": "offer-b",
                                "offer_deadline": "2026-07-04T12:00:00Z"}
    assert "offer-c" not in str(requests[1].data) and PROVIDER_C not in str(requests[1].data)
    assert requests == service.reopen_notifications("cause-1", REFERRAL_ID, "croydon", reopened)  # same ids
    assert len({r.notification_id for r in requests}) == 3


@pytest.fixture
async def runtime(tmp_path: Path) -> Any:
    live = ServiceRuntime("referral", Settings(data_dir=tmp_path), publishes=["referral", "notifications"],
                          store_class=SealingEventStore)
    await upgrade(live.db, "referral")
    yield live
    await live.db.dispose()


async def test_the_consumer_records_the_reopening_its_view_and_the_notifications(runtime: ServiceRuntime) -> None:
    async with runtime.db.transaction() as conn:  # the referral as the service recorded it
        await runtime.store.append(conn, REFERRAL_ID, 0, history())
    event = Envelope(type="award-collapsed", subject=PLACEMENT_ID, source="placematch/placement",
                     time="2026-06-20T12:00:00.000000Z",
                     data=collapse(next="reopen", next_offer_id=None, justification=None))
    async with runtime.db.transaction() as conn:
        await handlers.react_live(runtime, conn, event)
    async with runtime.db.transaction() as conn:
        await handlers.react_live(runtime, conn, event)  # past the journal a second time: nothing more
        row = await projections.load_view_row(conn, REFERRAL_ID)
    assert row is not None and row.status == "open"
    recorded = [e async for e in runtime.store.iter_all()]
    assert [e.type for e in recorded if e.subject == REFERRAL_ID][-2:] == ["award-revoked", "referral-reopened"]
    notes = [e for e in recorded if e.type == "notification-requested"]
    assert sorted((n.data["recipient"]["role"], n.data["recipient"]["tenant"]) for n in notes) == sorted(
        [("borough", "croydon"), ("provider", PROVIDER_B), ("provider", PROVIDER_C)])
    # an off-framework placement's collapse has no referral: nothing happens
    async with runtime.db.transaction() as conn:
        await handlers.react_live(runtime, conn, Envelope(type="award-collapsed", subject="p-2",
                                                          source="placematch/placement",
                                                          data=collapse(referral_id=None, next="none")))
    assert len([e async for e in runtime.store.iter_all()]) == len(recorded)
