"""Award collapse (issue 16): after `award-revoked` the collapsed offer no longer stands and the
referral is no longer awarded; after `referral-reopened` the standing offers are ranked again and
new offers are ranked as for any open referral, the invitations unchanged. The fold (replay)
decides the same."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from services.matching import projections as views
from services.matching.fold import Fold
from services.matching.handlers import react
from services.matching.replay import DECISIONS, ReplayRecorder, _decision_line
from services.matching.service import POLICY_JOURNAL
from services.referral.offers import Shortlist
from shared.db import Database, sqlite_url
from shared.events import Envelope
from shared.migrations import upgrade
from shared.store import EventStore
from tests.unit.matching.test_service import PROFILE, REF


def ev(type_: str, subject: str, data: dict[str, Any], source: str = "referral") -> Envelope:
    return Envelope(type=type_, subject=subject, data=data, source=f"placematch/{source}")


def offer(offer_id: str, provider_id: str, fee: int, at: str) -> Envelope:
    return ev("offer-submitted", "r1", {"offer_id": offer_id, "provider_id": provider_id, "weekly_fee_pence": fee,
                                        "start_date": "2026-09-01", "submitted_at": at})


def revoked(next_step: str) -> Envelope:
    return ev("award-revoked", "r1", {"offer_id": "o1", "provider_id": "p1", "placement_id": "pl1",
                                      "reason": "provider_withdrew", "next": next_step, "borough": "croydon",
                                      "revoked_at": "2026-06-01T10:00:00.000000Z"})


REOPENED = ev("referral-reopened", "r1", {
    "offer_deadline": "2026-07-01T17:00:00.000000Z", "reason": "reopened_by_borough", "collapsed_offer_id": "o1",
    "standing_offers": [{"offer_id": "o2", "provider_id": "p2"}], "borough": "croydon"})
AWARDED = ev("placement-awarded", "r1", {"offer_id": "o1", "provider_id": "p1", "weekly_fee_pence": 400000,
                                         "not_selected": [{"offer_id": "o2", "provider_id": "p2"}],
                                         "awarded_at": "2026-05-20T10:00:00.000000Z"})


def log() -> list[Envelope]:
    return [
        ev("provider-approved", "p1", {**PROFILE, "quality_score": "80.00"}, "enrolment"),
        ev("provider-approved", "p2", {**PROFILE, "quality_score": "70.00"}, "enrolment"),
        ev("provider-approved", "p3", {**PROFILE, "quality_score": "60.00"}, "enrolment"),
        ev("referral-raised", "r1", REF),
        offer("o1", "p1", 400000, "2026-05-02T10:00:00Z"),
        offer("o2", "p2", 450000, "2026-05-02T11:00:00Z"),
        AWARDED,
        revoked("reopen"),
        REOPENED,
        offer("o3", "p3", 350000, "2026-06-02T11:00:00Z"),
        ev("referral-reopened", "r1", {"reason": "reopened_by_borough"}),  # unusable: dead-lettered
    ]


async def run_live(tmp_path: Path, events: list[Envelope]) -> tuple[list[Envelope], list[str], int]:
    """The live reactions over a database, each event in its own transaction as the consumer's."""
    db = Database(sqlite_url(tmp_path / "matching.db"))
    await upgrade(db, "matching")
    store = EventStore(db, "placematch/matching")
    poisoned = 0
    try:
        for envelope in events:
            try:
                async with db.transaction() as conn:
                    await react(ReplayRecorder(store), conn, envelope)
            except Exception as error:
                assert type(error).__name__ == "PoisonEvent"
                poisoned += 1
        recorded = [e async for e in store.iter_all(types=DECISIONS)]
        async with db.read() as conn:
            found = await views.get_referral(conn, "r1")
            assert found is not None
            status = found[1].status
            awarded = found[1].awarded_offer_id
        lines = [_decision_line(e) for e in recorded]
        recorded.append(ev("status", "r1", {"status": status, "awarded_offer_id": awarded}))
    finally:
        await db.dispose()
    return recorded, lines, poisoned


def shortlists(recorded: list[Envelope]) -> list[list[str]]:
    return [[e["offer_id"] for e in r.data["entries"]] for r in recorded if r.type == "shortlist-ranked"]


async def test_a_reopened_referral_ranks_its_standing_offers_and_new_ones(tmp_path: Path) -> None:
    recorded, _, poisoned = await run_live(tmp_path, log())
    assert poisoned == 1
    # o1, o2 before the award; the reopening ranks o2 alone (o1 collapsed); the new offer o3 is ranked into it
    assert shortlists(recorded) == [["o1"], ["o1", "o2"], ["o2"], ["o3", "o2"]]
    matched = [r for r in recorded if r.type == "referral-matched"]
    assert len(matched) == 1 and matched[0].data["invited"] == ["p1", "p2", "p3"]  # invitations as they were
    assert recorded[-1].data == {"status": "open", "awarded_offer_id": None}


async def test_after_the_revocation_the_next_awards_shortlist_check_passes(tmp_path: Path) -> None:
    """Referral's award rule: a shortlist that ranks exactly the standing offers. Standing after the
    collapse: o2 (not selected at the first award, standing again) and the new o3."""
    events = log()[:-1]
    recorded, _, _ = await run_live(tmp_path, events)
    last = [r for r in recorded if r.type == "shortlist-ranked"][-1]
    shortlist = Shortlist(tuple(e["offer_id"] for e in last.data["entries"]),
                          frozenset(x["offer_id"] for x in last.data["excluded"]))
    assert shortlist.is_current_for(["o2", "o3"])
    assert "o1" not in shortlist.ranked_offer_ids  # the collapsed offer no longer blocks: excluded, not ranked
    assert last.data["excluded"] == [{"offer_id": "o1", "provider_id": "p1", "reason": "offer_withdrawn"}]
    # before: the shortlist at the award ranked the collapsed offer, which referral no longer counts
    first = [r for r in recorded if r.type == "shortlist-ranked"][1]
    assert [e["offer_id"] for e in first.data["entries"]] == ["o1", "o2"]
    assert not Shortlist(tuple(e["offer_id"] for e in first.data["entries"])).is_current_for(["o2"])


async def test_revoked_then_next_offer_awarded_ranks_nothing(tmp_path: Path) -> None:
    events = [*log()[:7], revoked("award_next_offer"),
              ev("placement-awarded", "r1", {"offer_id": "o2", "provider_id": "p2", "weekly_fee_pence": 450000,
                                             "not_selected": [], "after_collapse_of": "o1",
                                             "awarded_at": "2026-06-01T10:00:00.000000Z"}),
              offer("o4", "p3", 300000, "2026-06-02T11:00:00Z")]  # awarded again: not ranked
    recorded, _, _ = await run_live(tmp_path, events)
    assert shortlists(recorded) == [["o1"], ["o1", "o2"]]
    assert recorded[-1].data == {"status": "awarded", "awarded_offer_id": "o2"}


async def test_the_fold_decides_as_live_matching_after_a_collapse(tmp_path: Path) -> None:
    _, live, _ = await run_live(tmp_path, log())
    fold, poisoned = Fold(), 0
    for envelope in log():
        try:
            fold.feed("matching-main", envelope, POLICY_JOURNAL)
        except Exception as error:
            assert type(error).__name__ == "PoisonEvent"
            poisoned += 1
    assert poisoned == 1
    assert len(live) == 5 and fold.decisions["r1"] == live
    assert fold.referrals["r1"].status == "open"
