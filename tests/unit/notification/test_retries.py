"""Outcome classification and the retry schedule."""
from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notification.retries import AttemptResult, RetryPolicy, classify_http, classify_smtp, parse_retry_after
from tests.support.notification import T0


@pytest.mark.parametrize(
    ("code", "result"),
    [
        (200, AttemptResult.SUCCEEDED), (204, AttemptResult.SUCCEEDED), (None, AttemptResult.RETRYABLE),
        (429, AttemptResult.RETRYABLE), (500, AttemptResult.RETRYABLE), (503, AttemptResult.RETRYABLE),
        (400, AttemptResult.REJECTED), (401, AttemptResult.REJECTED), (404, AttemptResult.REJECTED),
        (410, AttemptResult.REJECTED), (301, AttemptResult.REJECTED),
    ],
)
def test_http_classification(code: int | None, result: AttemptResult) -> None:
    assert classify_http(code) is result


def test_smtp_classification() -> None:
    assert classify_smtp(250) is AttemptResult.SUCCEEDED
    assert classify_smtp(451) is AttemptResult.RETRYABLE
    assert classify_smtp(None) is AttemptResult.RETRYABLE
    assert classify_smtp(550) is AttemptResult.REJECTED


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay=timedelta(seconds=5), factor=6, max_delay=timedelta(hours=6), jitter=0)
    delays = [policy.delay(n, jitter_sample=0.5).total_seconds() for n in range(1, 8)]
    assert delays == [5, 30, 180, 1080, 6480, 21600, 21600]


@given(n=st.integers(min_value=1, max_value=200), sample=st.floats(min_value=0, max_value=1))
def test_jitter_stays_within_bounds(n: int, sample: float) -> None:
    policy = RetryPolicy()
    unjittered = RetryPolicy(jitter=0).delay(n, jitter_sample=0)
    delay = policy.delay(n, jitter_sample=sample)
    assert unjittered * 0.8 <= delay <= unjittered * 1.2 + timedelta(microseconds=1)


def test_jitter_spreads_retries() -> None:
    policy = RetryPolicy()
    assert policy.delay(3, jitter_sample=0.0) < policy.delay(3, jitter_sample=0.99)


def test_retry_after_is_a_floor_capped() -> None:
    policy = RetryPolicy(jitter=0, max_retry_after=timedelta(hours=1))
    assert policy.delay(1, jitter_sample=0, retry_after=timedelta(seconds=120)) == timedelta(seconds=120)
    assert policy.delay(1, jitter_sample=0, retry_after=timedelta(seconds=1)) == timedelta(seconds=5)
    assert policy.delay(1, jitter_sample=0, retry_after=timedelta(days=3)) == timedelta(hours=1)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("120", now=T0) == timedelta(seconds=120)
    assert parse_retry_after("Mon, 01 Jun 2026 09:01:00 GMT", now=T0) == timedelta(seconds=60)
    assert parse_retry_after("Mon, 01 Jun 2026 08:00:00 GMT", now=T0) == timedelta(0)
    assert parse_retry_after("soon", now=T0) is None
    assert parse_retry_after(None, now=T0) is None
