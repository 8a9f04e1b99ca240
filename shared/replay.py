"""What the services' replays share: the runtime their reactions record through, the service's
journal as the input order, the canonical line an event is compared as, and the item-by-item
comparison of two lists of such lines (`services/matching/replay.py`, `services/placement/replay.py`)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from shared.consumers import input_order
from shared.db import Database
from shared.events import dumps
from shared.settings import Settings
from shared.store import EventStore


@dataclass
class ReplayRecorder:
    """The runtime replay's reactions record through: the fresh database's store, live's topic names."""

    store: EventStore
    settings: Settings = field(default_factory=Settings)

    def topic(self, short: str) -> str:
        return self.settings.topic(short)


D = TypeVar("D")


@dataclass
class Report(Generic[D]):
    """What every replay reports: the inputs fed back, the differences found, the inputs missing from
    the log, those set aside (live sent them to the dead-letter topic), and where the inputs came from."""

    inputs: int = 0
    differences: list[D] = field(default_factory=list)
    missing_inputs: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def ok(self) -> bool:
        return not self.differences and not self.missing_inputs


async def journaled_order(journal_url: str | None) -> list[tuple[str, str]] | None:
    """(consumer, event id) of every input, in the order the service took them in, from its journal
    in the database at `journal_url` (None without one)."""
    if not journal_url:
        return None
    journal_db = Database(journal_url)
    try:
        async with journal_db.read() as conn:
            return await input_order(conn)
    finally:
        await journal_db.dispose()


def event_line(type_: str, data: Any) -> str:
    """An event as replay compares it: its type and its data as canonical JSON."""
    return f"{type_} {dumps(data).decode()}"


def mismatches(left: Sequence[str], right: Sequence[str]) -> Iterator[tuple[int, str | None, str | None]]:
    """(index, left item, right item) wherever the two differ; None past the end of the shorter."""
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else None
        b = right[i] if i < len(right) else None
        if a != b:
            yield i, a, b
