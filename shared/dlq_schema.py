"""Data model of the marker a dead-letter re-drive leaves (shared.dlq, issue 15 catalogue)."""
from __future__ import annotations

from shared.eventschema import EventData


class DeadLetterRedriven(EventData):
    dead_letter: str
    event_id: str
    topic: str
    consumer: str
    redriven_at: str


EVENTS = {("dead-letter-redriven", 1): DeadLetterRedriven}
TOPICS = {"placematch.notifications.dlq": ["dead-letter-redriven"]}
