"""What the placement service does with each consumed event type (in one transaction, via `react`)."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from services.placement import projections as views
from services.placement.domain import awarded_placement_id
from services.placement.handlers import REACTIONS, react
from services.placement.replay import ReplayRecorder
from shared.consumers import PoisonEvent
from shared.db import Database, sqlite_url
from shared.events import Envelope
from shared.migrations import upgrade
from shared.store import EventStore
from tests.unit.placement.test_api import NEEDS, OUTCOMES, REFERRAL


def env(type_: str, subject: str, data: dict[str, Any], source: str = "referral") -> Envelope:
    return Envelope(type=type_, subject=subject, data=data, source=f"placematch/{source}")


AWARD = {"offer_id": "o1", "provider_id": "p1", "weekly_fee_pence": 400000, "borough": "croydon",
         "justification": "Parental preference", "awarded_at": "2026-08-01T10:00:00Z"}


async def test_reactions(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path / "placement.db"))
    await upgrade(db, "placement")
    recorder = ReplayRecorder(EventStore(db, "placematch/placement"))
    rid = str(uuid.uuid4())
    assert set(REACTIONS) == {"referral-raised", "referral-amended", "placement-awarded", "shortlist-ranked"}
    try:
        async with db.transaction() as conn:
            await react(recorder, conn, env("referral-raised", rid, REFERRAL))
            facts = await views.get_referral_facts(conn, rid)
            assert facts is not None and facts.outcomes == OUTCOMES and facts.needs_profile == NEEDS
            await react(recorder, conn, env("referral-amended", rid, {"changes": {}, "referral": {
                **REFERRAL, "outcomes": ["Only this"]}}))
            await react(recorder, conn, env("referral-amended", rid, {"changes": {}}))  # no referral: kept as is
            assert (await views.get_referral_facts(conn, rid)).outcomes == ["Only this"]  # type: ignore[union-attr]
            await react(recorder, conn, env("shortlist-ranked", rid, {"referral_id": rid, "entries": [
                {"rank": 1, "offer_id": "o1", "provider_id": "p1", "weekly_fee_pence": 400000, "quality": "80.00"}]},
                "matching"))
            assert [e.offer_id for e in await views.get_shortlist(conn, rid) or []] == ["o1"]
            await react(recorder, conn, env("offer-submitted", rid, {"anything": 1}))  # not ours: ignored
            await react(recorder, conn, env("placement-awarded", rid, AWARD))
            await react(recorder, conn, env("placement-awarded", rid, AWARD))  # same award again: no second opening
            view = await views.get_view(conn, awarded_placement_id(rid, "o1"))
            assert view is not None and view["justification"] == "Parental preference"
            assert [o["outcome"] for o in view["outcomes"]] == ["Only this"]
            for bad in ({**AWARD, "weekly_fee_pence": -5}, {k: v for k, v in AWARD.items() if k != "offer_id"},
                        {**AWARD, "offer_id": "o2", "weekly_fee_pence": "lots"}):
                with pytest.raises(PoisonEvent):
                    await react(recorder, conn, env("placement-awarded", str(uuid.uuid4()), bad))
            with pytest.raises(PoisonEvent):
                await react(recorder, conn, env("shortlist-ranked", rid, {"referral_id": rid}, "matching"))
        stored = [e async for e in recorder.store.iter_all()]
        assert [e.type for e in stored] == ["placement-opened"]
        assert "child_ref" not in stored[0].data and "birth_date" not in stored[0].data
    finally:
        await db.dispose()
