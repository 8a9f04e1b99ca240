"""Which service function reacts to which consumed event, and enrolment's one consumer.

Enrolment is the upstream of every other service: its facts (applications, inspections,
approvals, suspensions) are decided here from commands (service.py) and published on
`placematch.enrolment`. Since issue 16 it also reads `placematch.placement`, to count each
provider's vacancies and to score its placements' outcomes (scoring policy version 2); it keeps
working, and keeps its audit trail, when the rest of the stack is down.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.consumers import reactor
from shared.events import Envelope
from shared.service import ConsumerSpec, ServiceRuntime

from . import service
from .domain import PLACEMENT_EVENTS

Reaction = Callable[[ServiceRuntime, AsyncConnection, Envelope], Awaitable[None]]

REACTIONS: dict[str, Reaction] = {type_: service.on_placement_event for type_ in sorted(PLACEMENT_EVENTS)}
"""placematch.placement: placement-opened, -started, -ended, -reviewed and award-collapsed."""


react = reactor(REACTIONS)
"""The consumer's handler: the reaction to `event`, in the consumer's transaction.
Malformed data never gets better on retry: straight to the dead-letter topic (`shared.consumers.reactor`)."""


def consumers(runtime: ServiceRuntime) -> list[ConsumerSpec]:
    return [ConsumerSpec(["placement"], partial(react, runtime), batch_size=20)]
