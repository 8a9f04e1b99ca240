"""Domain errors. The web layer maps each to an RFC 9457 problem+json response."""
from __future__ import annotations


class DomainError(Exception):
    """A command was refused. Nothing was recorded."""

    status: int = 422
    title: str = "Unprocessable request"

    def __init__(self, detail: str, *, field: str | None = None, rule: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.rule = rule


class RuleViolation(DomainError):
    """Input breaks a business rule (422); `field` names the offending field."""

    status = 422
    title = "Rule violated"


class InvalidTransition(DomainError):
    """The aggregate's current state does not allow this command (409)."""

    status = 409
    title = "Not allowed in the current state"


class NotFound(DomainError):
    status = 404
    title = "Not found"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"


class ConcurrencyError(DomainError):
    """Another writer appended to the stream first; reload and retry."""

    status = 409
    title = "Concurrent modification"


class ClaimTakenOver(DomainError):
    """Another instance took this request's Idempotency-Key over (its lease had lapsed): this run
    must not take effect, the other one does."""

    status = 409
    title = "Request taken over"
    retry_after = 1
