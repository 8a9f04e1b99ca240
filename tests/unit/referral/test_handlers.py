"""handlers.py: one consumer of four topics, 20 events a transaction, and a map from event types to
service.py's reactions (nothing else)."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.referral import handlers, projections, service
from shared.consumers import PoisonEvent
from shared.db import Database, sqlite_url
from shared.events import Envelope
from shared.migrations import upgrade
from shared.service import ServiceRuntime
from shared.settings import Settings


def test_one_consumer_of_five_topics_in_batches_of_twenty(tmp_path: Path) -> None:
    runtime = ServiceRuntime("referral", Settings(data_dir=tmp_path), consumes=handlers.consumers)
    [spec] = handlers.consumers(runtime)
    assert list(spec.topics) == ["matching", "enrolment", "audit", "notifications", "placement"]
    assert spec.batch_size == 20
    assert [c.topics for c in runtime.consumers] == [["placematch.matching", "placematch.enrolment", "placematch.audit",
                                                       "placematch.notifications", "placematch.placement"]]


def test_every_reaction_is_a_service_function() -> None:
    assert {f.__module__ for f in handlers.REACTIONS.values()} == {service.__name__}
    assert set(handlers.REACTIONS) == {"referral-matched", "shortlist-ranked", "provider-suspended",
                                       "provider-reinstated"}
    assert {f.__module__ for f in handlers.COMMANDS.values()} == {service.__name__}
    assert set(handlers.COMMANDS) == {"award-collapsed"}


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    database = Database(sqlite_url(tmp_path / "referral.db"))
    await upgrade(database, "referral")
    return database


async def test_reactions_record_facts_keep_audit_records_and_refuse_malformed_events(db: Database) -> None:
    rid = "5b0e7a52-2a4c-4e7e-9a57-0a0b8f7b1c11"
    matched = Envelope(type="referral-matched", subject=rid, source="placematch/matching",
                       data={"referral_id": rid, "borough": "croydon", "invited": ["p-1"]})
    suspended = Envelope(type="provider-suspended", subject="p-1", source="placematch/enrolment", data={"reason": "x"})
    unrelated = Envelope(type="provider-applied", subject="p-2", source="placematch/enrolment", data={})
    async with db.transaction() as conn:
        for event in (matched, suspended, unrelated):
            await handlers.react(conn, event)
        invitation = await projections.invitation_of(conn, rid, "p-1")
        trail = await projections.audit_trail_of(conn, rid)
    assert (invitation.known, invitation.invited, invitation.suspended) == (True, True, True)
    assert [e.id for e in trail] == [matched.id]
    for broken in ({"referral_id": rid}, {"referral_id": rid, "invited": "p-1"}):
        with pytest.raises(PoisonEvent):
            async with db.transaction() as conn:
                await handlers.react(conn, Envelope(type="referral-matched", subject="", data=broken,
                                                    source="placematch/matching"))
    await db.dispose()
