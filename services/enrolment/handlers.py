"""Which service function reacts to which consumed event: none, and enrolment's consumers: none.

Enrolment is the upstream of every other service: its facts (applications, inspections,
approvals, suspensions) are decided here from commands (service.py) and published on
`placematch.enrolment`. It reads no other service's events, so it keeps working, and keeps its
audit trail, when the rest of the stack is down. A reaction, when one comes, is a function of
service.py listed in REACTIONS, and `consumers` returns the ConsumerSpec that feeds it.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events import Envelope
from shared.service import ConsumerSpec, ServiceRuntime

Reaction = Callable[[ServiceRuntime, AsyncConnection, Envelope], Awaitable[None]]

REACTIONS: dict[str, Reaction] = {}
"""Enrolment reacts to no event."""


def consumers(runtime: ServiceRuntime) -> list[ConsumerSpec]:
    return []
