"""How an attempt ended, and when to try again: outcome classification and backoff with jitter."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum


class AttemptResult(StrEnum):
    """How one attempt ended: delivered, worth another try, or refused for good."""

    SUCCEEDED = "succeeded"
    RETRYABLE = "retryable"
    REJECTED = "rejected"


@dataclass(frozen=True)
class AttemptOutcome:
    """What the worker saw on one attempt."""

    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    result: AttemptResult
    error: str | None = None
    retry_after: timedelta | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    The n-th failed attempt (n >= 1) waits `min(max_delay, base_delay * factor**(n-1))`, scaled by
    a jitter factor in `[1 - jitter, 1 + jitter)` so that many deliveries failing together do not
    return together. A `Retry-After` from the receiver is honoured as a floor, capped at
    `max_retry_after`. Defaults: 5s, 30s, 3m, 18m, 1.8h, then 6h until attempt 8 (~17h in all).
    """

    max_attempts: int = 8
    base_delay: timedelta = timedelta(seconds=5)
    factor: float = 6.0
    max_delay: timedelta = timedelta(hours=6)
    jitter: float = 0.2
    max_retry_after: timedelta = timedelta(hours=24)

    def delay(self, failed_attempts: int, *, jitter_sample: float, retry_after: timedelta | None = None) -> timedelta:
        """Wait before the next attempt, `jitter_sample` drawn uniformly from [0, 1)."""
        if failed_attempts < 1:
            raise ValueError("failed_attempts starts at 1")
        exponent = min(failed_attempts - 1, 64)
        base_seconds = min(self.max_delay.total_seconds(), self.base_delay.total_seconds() * self.factor**exponent)
        scale = 1 - self.jitter + 2 * self.jitter * min(max(jitter_sample, 0.0), 1.0)
        wait = timedelta(seconds=base_seconds * scale)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait


def classify_http(status_code: int | None) -> AttemptResult:
    """2xx delivered; no response (timeout, connection error), 429 and 5xx retried; anything else
    (other 4xx, and 3xx since redirects are not followed) is refused for good."""
    if status_code is None:
        return AttemptResult.RETRYABLE
    if 200 <= status_code < 300:
        return AttemptResult.SUCCEEDED
    if status_code == 429 or 500 <= status_code < 600:
        return AttemptResult.RETRYABLE
    return AttemptResult.REJECTED


def classify_smtp(reply_code: int | None) -> AttemptResult:
    """SMTP: 2xx accepted; no reply or 4xx transient; 5xx permanent."""
    if reply_code is None:
        return AttemptResult.RETRYABLE
    if 200 <= reply_code < 300:
        return AttemptResult.SUCCEEDED
    if 400 <= reply_code < 500:
        return AttemptResult.RETRYABLE
    return AttemptResult.REJECTED


def parse_retry_after(value: str | None, *, now: datetime) -> timedelta | None:
    """`Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when - now, timedelta(0))
