"""The CloudEvents 1.0 envelope of every placematch event, its wire form and versioned types.

Stored and published events are CloudEvents in structured JSON mode. The `cloudevents`
package builds and parses the Kafka form; orjson writes the canonical bytes we hash and store.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent

from shared import context, tracing
from shared.vocabulary import format_instant, now_utc

__all__ = ["Envelope", "EventRegistry", "dumps", "format_time", "loads", "now_utc", "registry"]

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def format_time(moment: datetime) -> str:
    """ISO 8601 UTC with microseconds and `Z`, the text form of an instant we store
    (`shared.vocabulary.format_instant`)."""
    return format_instant(moment)


def dumps(value: Any) -> bytes:
    """Canonical JSON: sorted keys, so equal content gives equal bytes (hashing, replay diffs)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


loads = orjson.loads


@dataclass(frozen=True)
class Envelope:
    """One event with its CloudEvents attributes and placematch extensions."""

    type: str
    subject: str
    data: dict[str, Any]
    source: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: str = field(default_factory=lambda: format_time(now_utc()))
    sequence: int = 0
    correlationid: str | None = None
    causationid: str | None = None
    actor: str | None = None
    actorid: str | None = None
    """Extension `actorid`: the `sub` of the token behind `actor` (the person who did it)."""
    dataversion: int = 1
    traceparent: str | None = field(default_factory=tracing.current_traceparent)
    """CloudEvents distributed-tracing extension: the span the event was created in (None while tracing is off)."""
    tracestate: str | None = field(default_factory=tracing.current_tracestate)
    origintime: str | None = field(default_factory=context.origin_time.get)
    """`time` of the event that began the causal chain (a referral-raised, for the notifications it leads
    to); set on events appended while a consumer handles another; None for a chain's first event."""
    dataschema: str | None = None
    """`/schemas/{type}/v{dataversion}.json` (issue 15): set on events appended since, absent on older ones."""
    position: int | None = None
    """Position in the store that recorded it; local to that store, never on the wire."""

    def attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "specversion": SPECVERSION,
            "subject": self.subject,
            "time": self.time,
            "datacontenttype": CONTENT_TYPE,
            "sequence": self.sequence,
            "dataversion": self.dataversion,
        }
        for name in ("correlationid", "causationid", "actor", "actorid", "traceparent", "tracestate", "origintime",
                     "dataschema"):
            value = getattr(self, name)
            if value is not None:
                attrs[name] = value
        return attrs

    def to_dict(self) -> dict[str, Any]:
        return {**self.attributes(), "data": self.data}

    def to_json(self) -> bytes:
        """Structured-mode CloudEvent bytes (what we store and put on Kafka)."""
        return dumps(self.to_dict())

    def to_cloudevent(self) -> CloudEvent:
        attrs = self.attributes()
        attrs["time"] = datetime.fromisoformat(self.time.replace("Z", "+00:00"))
        return CloudEvent(attributes=attrs, data=self.data)

    def to_kafka(self) -> ce_kafka.KafkaMessage:
        """Kafka message in structured mode; key = subject (the aggregate id)."""
        message = ce_kafka.to_structured_event(self.to_cloudevent(), key_mapper=lambda ev: ev.get_subject())
        return ce_kafka.KafkaMessage(headers=message.headers, key=message.key, value=self.to_json())

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, position: int | None = None) -> Envelope:
        envelope = cls(
            id=doc["id"],
            source=doc["source"],
            type=doc["type"],
            subject=doc.get("subject") or "",
            time=doc["time"] if isinstance(doc["time"], str) else format_time(doc["time"]),
            data=doc.get("data") or {},
            sequence=int(doc.get("sequence") or 0),
            correlationid=doc.get("correlationid"),
            causationid=doc.get("causationid"),
            actor=doc.get("actor"),
            actorid=doc.get("actorid"),
            dataversion=int(doc.get("dataversion") or 1),
            traceparent=doc.get("traceparent"),
            tracestate=doc.get("tracestate"),
            origintime=doc.get("origintime"),
            dataschema=doc.get("dataschema"),
            position=position,
        )
        return registry.upcast(envelope)

    @classmethod
    def from_json(cls, raw: bytes | str, *, position: int | None = None) -> Envelope:
        return cls.from_dict(loads(raw), position=position)

    @classmethod
    def from_kafka(cls, value: bytes, headers: dict[str, bytes] | None = None, key: bytes | None = None) -> Envelope:
        """Parse with the CloudEvents Kafka binding (validates the envelope), keep our exact data."""
        message = ce_kafka.KafkaMessage(headers=headers or {"content-type": b"application/cloudevents+json"},
                                        key=key, value=value)
        event = ce_kafka.from_structured_event(message)
        attrs = dict(event.get_attributes())
        attrs.pop("partitionkey", None)
        attrs["data"] = event.get_data()
        return cls.from_dict(attrs)


class EventRegistry:
    """Known event types with their current data version and the upcasters that reach it.

    A changed payload gets a new version and an upcaster from the previous one; stored events
    are never rewritten, they are upcast as they are read.
    """

    def __init__(self) -> None:
        self._versions: dict[str, int] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, type_: str, version: int = 1, upcasters: dict[int, Upcaster] | None = None) -> None:
        """`upcasters[n]` turns version-n data into version n+1."""
        self._versions[type_] = version
        for from_version, upcaster in (upcasters or {}).items():
            self._upcasters[(type_, from_version)] = upcaster

    def version_of(self, type_: str) -> int:
        return self._versions.get(type_, 1)

    def upcast(self, envelope: Envelope) -> Envelope:
        target = self._versions.get(envelope.type)
        if target is None or envelope.dataversion >= target:
            return envelope
        data, version = envelope.data, envelope.dataversion
        while version < target:
            data = self._upcasters[(envelope.type, version)](data)
            version += 1
        schema = None if envelope.dataschema is None else envelope.dataschema.replace(
            f"/v{envelope.dataversion}.json", f"/v{version}.json")
        return replace(envelope, data=data, dataversion=version, dataschema=schema)


registry = EventRegistry()
