"""Event-sourced aggregate base: commands check rules and return events; `apply` folds them."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Self


@dataclass(frozen=True)
class NewEvent:
    """An event decided by an aggregate, before the store gives it an envelope."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


class Aggregate:
    """Subclasses implement `apply(type, data)` and command methods returning `list[NewEvent]`.

    Commands never mutate state themselves: the caller records the returned events and then
    calls `mutate(events)` (or reloads), so state only ever changes by folding events.
    """

    def __init__(self, id: str) -> None:
        self.id = id
        self.version = 0

    def apply(self, type: str, data: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def mutate(self, events: Iterable[NewEvent]) -> Self:
        for event in events:
            self.apply(event.type, event.data)
            self.version += 1
        return self

    @classmethod
    def replay(cls, id: str, history: Iterable[tuple[str, dict[str, Any]]]) -> Self:
        aggregate = cls(id)
        for type_, data in history:
            aggregate.apply(type_, data)
            aggregate.version += 1
        return aggregate
