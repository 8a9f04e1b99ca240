"""Who and why of the current request or event, carried to the store without plumbing (the keyed
request's claim is `shared.idempotency.claim`)."""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
causation_id: ContextVar[str | None] = ContextVar("causation_id", default=None)
actor: ContextVar[str | None] = ContextVar("actor", default=None)
actor_id: ContextVar[str | None] = ContextVar("actor_id", default=None)
"""The `sub` of the request's bearer token: the person (or client) behind `actor`; the store puts
it on every event of the request as the CloudEvents extension `actorid`."""
person: ContextVar[Any] = ContextVar("person", default=None)
"""The request's `shared.auth.Principal` when its token names the person (`name`,
`preferred_username`): the store keeps that in its `actors` table for the audit record, never in events."""
origin_time: ContextVar[str | None] = ContextVar("origin_time", default=None)
"""`time` of the first event of the causal chain being handled (an event's `origintime` extension)."""
