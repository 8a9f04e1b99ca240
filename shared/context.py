"""Who and why of the current request or event, carried to the store without plumbing (the keyed
request's claim is `shared.idempotency.claim`)."""
from __future__ import annotations

from contextvars import ContextVar

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
causation_id: ContextVar[str | None] = ContextVar("causation_id", default=None)
actor: ContextVar[str | None] = ContextVar("actor", default=None)
