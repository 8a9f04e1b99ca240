"""Dead letters: list what landed on the `<topic>.dlq` topics, show one, and re-drive it.

A consumer that gives up on an event (`shared.consumers`) publishes it to `<topic>.dlq` unchanged,
with headers saying which consumer failed, why (`placematch-error`), after how many attempts, when,
and where it came from. Re-driving publishes the event again on its original topic (same key, so
the same partition), where its consumer takes it in once more; every consumer records the ids it
processed (`processed_events`), so one that had already handled it, or a second copy, has no
effect. A re-drive also leaves a marker on the dead-letter topic (a `dead-letter-redriven`
CloudEvent naming the entry): a dead letter re-driven once is not re-driven again, so
`redrive` twice hands the event back once. Should the event fail again, it comes back as a new
dead letter, which can be re-driven in its turn.

Other events published straight to a `.dlq` topic (notification's `delivery-failed`, a webhook
delivery that finally failed) are listed too, but have no consumer to hand back to: those are
retried with `POST /deliveries/{id}/retry`.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.bus import Bus, Message
from shared.events import Envelope, format_time, now_utc

DLQ_SUFFIX = ".dlq"
REDRIVEN = "dead-letter-redriven"
MARKER_HEADER = "placematch-redrive-of"
FROM_HEADER = "placematch-redriven-from"
STRUCTURED = {"content-type": b"application/cloudevents+json"}


@dataclass
class DeadLetter:
    """One message on a dead-letter topic."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, bytes]
    event_id: str = ""
    event_type: str = ""
    event_time: str = ""
    redriven: list[str] = field(default_factory=list)
    """When it was re-driven (each marker's time; normally at most one)."""

    @property
    def id(self) -> str:
        """The dead letter's address: `<dlq topic>:<partition>:<offset>`."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def origin_topic(self) -> str:
        return self.topic[: -len(DLQ_SUFFIX)] if self.topic.endswith(DLQ_SUFFIX) else self.topic

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value.decode("utf-8", "replace") if value is not None else None

    @property
    def consumer(self) -> str | None:
        return self.header("placematch-consumer")

    @property
    def redrivable(self) -> bool:
        """A consumer gave up on it (rather than a service publishing it here on purpose)."""
        return self.consumer is not None

    @property
    def error(self) -> str:
        return self.header("placematch-error") or ""

    @property
    def reason(self) -> str:
        """The last line of the error (the exception and its message), or the event's own reason."""
        lines = [line for line in self.error.strip().splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:300]
        try:
            data = orjson.loads(self.value).get("data") or {}
        except orjson.JSONDecodeError:
            return "not a CloudEvent"
        return str(data.get("reason") or "")

    @property
    def attempts(self) -> int | None:
        value = self.header("placematch-attempts")
        if value is None and not self.redrivable:
            try:
                value = str((orjson.loads(self.value).get("data") or {}).get("attempts") or "") or None
            except orjson.JSONDecodeError:
                value = None
        return int(value) if value and value.isdigit() else None

    @property
    def failed_at(self) -> str:
        return self.header("placematch-failed-at") or self.event_time

    def summary(self) -> dict[str, Any]:
        origin = self.header("placematch-origin-offset")
        where = f"{self.origin_topic}:{self.header('placematch-origin-partition') or 0}:{origin}" if origin else None
        return {"id": self.id, "event_id": self.event_id, "type": self.event_type, "topic": self.origin_topic,
                "origin": where, "consumer": self.consumer, "failed_at": self.failed_at, "attempts": self.attempts,
                "reason": self.reason, "redriven_at": self.redriven[0] if self.redriven else None,
                "redrivable": self.redrivable}


def dlq_topic(settings: Any, name: str) -> str:
    """`referral` → `placematch.referral.dlq` (with the settings' topic prefix); a full name is kept."""
    if "placematch." in name:
        return name if name.endswith(DLQ_SUFFIX) else name + DLQ_SUFFIX
    return settings.topic(name.removesuffix(DLQ_SUFFIX)) + DLQ_SUFFIX


async def dlq_topics(bus: Bus, settings: Any) -> list[str]:
    """Every dead-letter topic of this deployment (of the settings' topic prefix)."""
    prefix = f"{settings.topic_prefix}placematch."
    db = getattr(bus, "db", None)
    if db is not None:  # the local bus
        from sqlalchemy import select

        from shared.bus import _log

        async with db.read() as conn:
            names = (await conn.execute(select(_log.c.topic).distinct())).scalars().all()
    else:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bus.bootstrap, client_id="placematch-dlq")  # type: ignore[attr-defined]
        await admin.start()
        try:
            names = await admin.list_topics()
        finally:
            await admin.close()
    return sorted(n for n in names if n.startswith(prefix) and n.endswith(DLQ_SUFFIX))


async def read(bus: Bus, topics: Sequence[str]) -> list[DeadLetter]:
    """Every dead letter on `topics`, oldest first, with the re-drives recorded against it."""
    if not topics:
        return []
    messages = await bus.read_topics(list(topics), f"placematch-dlq-{uuid.uuid4().hex[:12]}", timeout=120)
    letters: list[DeadLetter] = []
    redrives: dict[str, list[str]] = {}
    for m in messages:
        marker = m.headers.get(MARKER_HEADER)
        if marker is not None:
            try:
                at = str(orjson.loads(m.value).get("time") or "")
            except orjson.JSONDecodeError:
                at = ""
            redrives.setdefault(marker.decode(), []).append(at)
            continue
        letter = DeadLetter(m.topic, m.partition, m.offset, m.key, m.value, dict(m.headers))
        try:
            doc = orjson.loads(m.value)
            letter.event_id, letter.event_type = str(doc.get("id") or ""), str(doc.get("type") or "")
            letter.event_time = str(doc.get("time") or "")
        except (orjson.JSONDecodeError, AttributeError):
            pass
        letters.append(letter)
    for letter in letters:
        letter.redriven = redrives.get(letter.id, [])
    return letters


def find(letters: Sequence[DeadLetter], ident: str) -> list[DeadLetter]:
    """The dead letters `ident` names: its address (`topic:partition:offset`) or its event id."""
    return [x for x in letters if ident in (x.id, x.event_id)]


@dataclass
class Redrive:
    letter: DeadLetter
    done: bool
    why: str


async def redrive(bus: Bus, letters: Sequence[DeadLetter]) -> list[Redrive]:
    """Hand each dead letter back to its topic once: one not re-driven before is published again
    there, with a marker on its dead-letter topic; one already re-driven, or not a consumer's,
    is left as it is (and said why)."""
    results: list[Redrive] = []
    done_events: set[tuple[str, str]] = set()
    for letter in letters:
        if not letter.redrivable:
            results.append(Redrive(letter, False, "published here by a service, not given up on by a consumer "
                                                  "(a failed webhook delivery: POST /deliveries/{id}/retry)"))
            continue
        if letter.redriven:
            results.append(Redrive(letter, False, f"already re-driven at {letter.redriven[0]}"))
            continue
        again = (letter.origin_topic, letter.event_id)
        headers = {k: v for k, v in letter.headers.items() if not k.startswith("placematch-")}
        copy = Message(letter.origin_topic, letter.key, letter.value, {**headers, FROM_HEADER: letter.id.encode()})
        marker = Envelope(type=REDRIVEN, subject=letter.event_id or letter.id, source="placematch/dlq",
                          data={"dead_letter": letter.id, "event_id": letter.event_id, "topic": letter.origin_topic,
                                "consumer": letter.consumer, "redriven_at": format_time(now_utc())},
                          traceparent=None, tracestate=None, origintime=None)
        messages = [marker_message(letter, marker)]
        if again not in done_events:  # two consumers' dead letters of one event: one copy serves both
            messages.insert(0, copy)
            done_events.add(again)
        await bus.publish(messages)  # the local bus: both in one transaction; Kafka: the copy first
        letter.redriven = [marker.time]
        results.append(Redrive(letter, True, f"published again on {letter.origin_topic}"))
    return results


def marker_message(letter: DeadLetter, marker: Envelope) -> Message:
    return Message(letter.topic, letter.key, marker.to_json(), {**STRUCTURED, MARKER_HEADER: letter.id.encode()})
