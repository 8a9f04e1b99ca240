"""Who and why of the current request or event, carried to the store without plumbing."""
from __future__ import annotations

from contextvars import ContextVar

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
causation_id: ContextVar[str | None] = ContextVar("causation_id", default=None)
actor: ContextVar[str | None] = ContextVar("actor", default=None)
idempotency_claim: ContextVar[tuple[str, str, str] | None] = ContextVar("idempotency_claim", default=None)
"""(scope, key, owner instance id) of the keyed request being run."""
"""(scope, key) of the Idempotency-Key request being served; the store marks its effect."""
