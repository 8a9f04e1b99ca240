"""Envelopes: the CloudEvents binding round trip and upcasting on read."""
from __future__ import annotations

from shared.events import Envelope, EventRegistry


def test_envelope_round_trip_through_cloudevents_binding() -> None:
    envelope = Envelope(type="provider-approved", subject="p-1", data={"x": "1.00"}, source="placematch/enrolment",
                        sequence=3, correlationid="c-1", actor="commissioner:region")
    message = envelope.to_kafka()
    assert message.key == "p-1"
    assert message.headers["content-type"] == b"application/cloudevents+json"
    back = Envelope.from_kafka(message.value, message.headers)
    assert back == envelope


def test_upcaster_applies_on_read() -> None:
    reg = EventRegistry()
    reg.register("thing-made", 2, {1: lambda d: {**d, "colour": "unknown"}})
    old = Envelope(type="thing-made", subject="s", data={"a": 1}, source="x", dataversion=1)
    assert reg.upcast(old).data == {"a": 1, "colour": "unknown"}
    assert reg.upcast(old).dataversion == 2
