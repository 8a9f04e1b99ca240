"""handlers.py: one consumer of enrolment and referral, 20 events a transaction, and a map from event
types to service.py's reactions (nothing else)."""
from __future__ import annotations

from pathlib import Path

from services.matching import handlers, service
from shared.events import Envelope
from shared.service import ServiceRuntime
from shared.settings import Settings


def test_one_consumer_of_enrolment_and_referral_in_batches_of_twenty(tmp_path: Path) -> None:
    runtime = ServiceRuntime("matching", Settings(data_dir=tmp_path), consumes=handlers.consumers)
    [spec] = handlers.consumers(runtime)
    assert list(spec.topics) == ["enrolment", "referral"] and spec.batch_size == 20 and spec.name == "main"
    assert [c.topics for c in runtime.consumers] == [["placematch.enrolment", "placematch.referral"]]


def test_every_reaction_is_a_service_function() -> None:
    assert {f.__module__ for f in handlers.REACTIONS.values()} == {service.__name__}
    assert handlers.REACTIONS["provider-reinstated"] is service.on_provider_approved
    assert set(handlers.REACTIONS) == {
        "provider-approved", "provider-reinstated", "provider-updated", "provider-suspended", "provider-rescored",
        "provider-rejected", "referral-raised", "referral-amended", "referral-withdrawn", "offer-submitted",
        "offer-withdrawn", "invitation-declined", "placement-awarded", "referral-closed", "provider-vacancies-changed",
        "award-revoked", "referral-reopened"}


async def test_other_event_types_are_ignored(tmp_path: Path) -> None:
    runtime = ServiceRuntime("matching", Settings(data_dir=tmp_path))
    event = Envelope(type="provider-applied", subject="p", data={}, source="placematch/enrolment")
    await handlers.react(runtime, None, event)  # type: ignore[arg-type]  # never touches the database
