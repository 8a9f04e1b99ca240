"""Unit tests of the notification domain: subscriptions, planning, retries, deliveries, SSRF."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notification.domain import (
    AttemptOutcome,
    AttemptResult,
    Channel,
    Delivery,
    DeliveryFilter,
    DeliveryStatus,
    DisablePolicy,
    NotificationRequest,
    Owner,
    RetryPolicy,
    Subscription,
    SubscriptionStatus,
    check_resolved_addresses,
    check_webhook_url,
    classify_http,
    classify_smtp,
    delivery_recorded,
    legacy_secret_id,
    new_signing_secret,
    parse_retry_after,
    plan_deliveries,
)
from shared.errors import Forbidden, InvalidTransition, NotFound, RuleViolation
from shared.events import Envelope

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)
PROVIDER = Owner("provider", "prov-1")
OTHER_PROVIDER = Owner("provider", "prov-2")
URL = "https://portal.example/hooks/placematch"


def new_subscription(
    id: str = "sub-1", owner: Owner = PROVIDER, event_types: list[str] | None = None, url: str = URL
) -> Subscription:
    events = Subscription.create(
        id,
        owner=owner,
        url=url,
        event_types=event_types or ["referral.invited"],
        secret_id="secret-1",
        at=T0,
        allow_private=False,
    )
    return Subscription(id).mutate(events)


def request(**overrides: object) -> NotificationRequest:
    data = {
        "notification_id": "n-1",
        "webhook_type": "referral.invited",
        "recipient": {"role": "provider", "tenant": "prov-1"},
        "email": "admissions@riverside.example",
        "referral_id": "r-1",
        "data": {"referral_id": "r-1", "age_at_start": 12, "district": "Croydon"},
    }
    data.update(overrides)
    return NotificationRequest.from_event(data)


def scheduled_delivery(channel: Channel = Channel.WEBHOOK) -> Delivery:
    planned = plan_deliveries(request(), [new_subscription()] if channel is Channel.WEBHOOK else [])[0]
    return Delivery("d-1").mutate(Delivery.schedule("d-1", request=request(), planned=planned, at=T0))


def outcome(code: int | None, at: datetime = T0, retry_after: timedelta | None = None) -> AttemptOutcome:
    return AttemptOutcome(
        attempted_at=at,
        status_code=code,
        latency_ms=12,
        result=classify_http(code),
        error=None if code else "timeout",
        retry_after=retry_after,
    )


# --- SSRF guard --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://portal.example/hooks",
        "http://portal.example:8080/x?y=1",
        "https://93.184.216.34/hook",
        "https://[2606:4700::1111]/hook",
    ],
)
def test_public_http_urls_are_accepted(url: str) -> None:
    assert check_webhook_url(url, allow_private=False) == url


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://portal.example/x", "http_or_https"),
        ("file:///etc/passwd", "http_or_https"),
        ("gopher://portal.example/", "http_or_https"),
        ("portal.example/hooks", "http_or_https"),
        ("", "required"),
        ("https://", "valid_url"),
        ("https://user:pw@portal.example/", "no_credentials"),
        ("https://portal.example:99999/", "valid_url"),
        ("http://127.0.0.1/", "public_address"),
        ("http://localhost:8004/", "public_address"),
        ("http://api.localhost/", "public_address"),
        ("http://10.1.2.3/", "public_address"),
        ("http://192.168.0.10/", "public_address"),
        ("http://172.16.5.4/", "public_address"),
        ("http://169.254.169.254/latest/meta-data/", "public_address"),
        ("http://[::1]/", "public_address"),
        ("http://[fe80::1]/", "public_address"),
        ("http://[fd00::1]/", "public_address"),
        ("http://[::ffff:127.0.0.1]/", "public_address"),
        ("http://0.0.0.0/", "public_address"),
        ("http://2130706433/", "public_address"),
        ("http://0x7f.1/", "public_address"),
        ("http://127.1/", "public_address"),
        ("http://100.64.0.1/", "public_address"),
        ("http://metadata.google.internal/", "public_address"),
    ],
)
def test_bad_or_private_urls_are_refused_naming_the_field(url: str, rule: str) -> None:
    with pytest.raises(RuleViolation) as refused:
        check_webhook_url(url, allow_private=False)
    assert refused.value.field == "url"
    assert refused.value.rule == rule


def test_private_targets_allowed_when_configured() -> None:
    assert check_webhook_url("http://127.0.0.1:9000/hook", allow_private=True)
    with pytest.raises(RuleViolation):
        check_webhook_url("ftp://127.0.0.1/", allow_private=True)


def test_resolved_addresses_are_checked_again() -> None:
    check_resolved_addresses("portal.example", ["93.184.216.34"], allow_private=False)
    with pytest.raises(Forbidden) as refused:
        check_resolved_addresses("rebind.example", ["93.184.216.34", "10.0.0.7"], allow_private=False)
    assert refused.value.field == "url"
    check_resolved_addresses("rebind.example", ["10.0.0.7"], allow_private=True)


# --- subscriptions -----------------------------------------------------------------------------


def test_create_subscription_records_owner_types_and_secret() -> None:
    sub = new_subscription(event_types=["shortlist.updated", "referral.invited", "referral.invited"])
    assert sub.owner == PROVIDER
    assert sub.event_types == ["referral.invited", "shortlist.updated"]
    assert sub.secret_id == "secret-1" and sub.signing_secret_ids(T0) == ["secret-1"]
    assert sub.status is SubscriptionStatus.ACTIVE
    assert sub.version == 1


def test_secrets_are_fresh_and_standard() -> None:
    a, b = new_signing_secret(), new_signing_secret()
    assert a != b and a.startswith("whsec_") and len(a) > 40


@pytest.mark.parametrize(
    ("event_types", "rule"),
    [([], "non_empty"), ("referral.invited", "non_empty"), (["referral.invited", "bogus"], "known_webhook_type")],
)
def test_event_types_are_checked(event_types: object, rule: str) -> None:
    with pytest.raises(RuleViolation) as refused:
        Subscription.create(
            "s", owner=PROVIDER, url=URL, event_types=event_types, secret_id="secret-1", at=T0,
            allow_private=False,
        )
    assert refused.value.field == "event_types"
    assert refused.value.rule == rule


@pytest.mark.parametrize("role", ["commissioner", "auditor"])
def test_only_providers_and_boroughs_subscribe(role: str) -> None:
    with pytest.raises(Forbidden):
        Subscription.create(
            "s", owner=Owner(role, "x"), url=URL, event_types=["referral.invited"],
            secret_id="secret-1", at=T0, allow_private=False,
        )


def test_a_tenant_cannot_see_anothers_subscription() -> None:
    sub = new_subscription()
    sub.ensure_owned_by(PROVIDER)
    with pytest.raises(NotFound):
        sub.ensure_owned_by(OTHER_PROVIDER)
    with pytest.raises(NotFound):
        sub.ensure_owned_by(Owner("borough", "prov-1"))


def test_delete_then_everything_is_refused() -> None:
    sub = new_subscription()
    sub.mutate(sub.delete(at=T0))
    assert sub.status is SubscriptionStatus.DELETED
    with pytest.raises(NotFound):
        sub.ensure_owned_by(PROVIDER)
    with pytest.raises(InvalidTransition):
        sub.delete(at=T0)
    with pytest.raises(InvalidTransition):
        sub.rotate_secret("secret-2", at=T0, grace=timedelta(hours=24))


def test_unknown_subscription_is_not_found() -> None:
    with pytest.raises(NotFound):
        Subscription("nope").delete(at=T0)


def test_rotation_keeps_previous_secret_signing_during_grace() -> None:
    sub = new_subscription()
    [rotated] = sub.rotate_secret("secret-2", at=T0, grace=timedelta(hours=24))
    assert rotated.data == {"subscription_id": "sub-1", "secret_id": "secret-2", "previous_secret_id": "secret-1",
                            "previous_valid_until": "2026-06-02T09:00:00Z", "rotated_at": "2026-06-01T09:00:00Z"}
    sub.mutate([rotated])
    assert sub.secret_id == "secret-2"
    assert sub.signing_secret_ids(T0 + timedelta(hours=1)) == ["secret-2", "secret-1"]
    assert sub.signing_secret_ids(T0 + timedelta(hours=24)) == ["secret-2"]


def test_no_subscription_event_carries_a_secret() -> None:
    sub = new_subscription()
    events = [*Subscription.create("sub-1", owner=PROVIDER, url=URL, event_types=["referral.invited"],
                                   secret_id="secret-1", at=T0, allow_private=False),
              *sub.rotate_secret("secret-2", at=T0, grace=timedelta(hours=24))]
    assert not any("whsec_" in str(e.data) or "secret" in e.data or "previous_secret" in e.data for e in events)


def test_version_1_events_with_secrets_in_clear_are_upcast_and_still_sign() -> None:
    """Stored before secrets left the events: `secret` / `previous_secret` in clear, data version 1."""
    old, new = new_signing_secret(), new_signing_secret()
    created = Envelope.from_dict({
        "id": "e1", "source": "placematch/notification", "type": "subscription-created", "subject": "sub-1",
        "time": "2026-06-01T09:00:00.000000Z", "dataversion": 1,
        "data": {"subscription_id": "sub-1", "owner": {"role": "provider", "tenant": "prov-1"}, "url": URL,
                 "event_types": ["referral.invited"], "contact_email": None, "secret": old,
                 "created_at": "2026-06-01T09:00:00Z"}})
    rotated = Envelope.from_dict({
        "id": "e2", "source": "placematch/notification", "type": "subscription-secret-rotated", "subject": "sub-1",
        "time": "2026-06-01T10:00:00.000000Z", "dataversion": 1,
        "data": {"subscription_id": "sub-1", "secret": new, "previous_secret": old,
                 "previous_valid_until": "2026-06-02T10:00:00Z", "rotated_at": "2026-06-01T10:00:00Z"}})
    assert created.dataversion == rotated.dataversion == 2
    assert "secret" not in created.data and created.data["secret_id"] == legacy_secret_id(old)
    assert rotated.data["previous_secret_id"] == created.data["secret_id"]
    sub = Subscription.replay("sub-1", [(e.type, e.data) for e in (created, rotated)])
    during, after = T0 + timedelta(hours=2), T0 + timedelta(hours=26)
    assert [sub.legacy_secrets[i] for i in sub.signing_secret_ids(during)] == [new, old]
    assert [sub.legacy_secrets[i] for i in sub.signing_secret_ids(after)] == [new]
    # a rotation after the upgrade names the legacy secret by its id; the next one forgets it
    sub.mutate(sub.rotate_secret("secret-3", at=after, grace=timedelta(hours=24)))
    assert sub.signing_secret_ids(after) == ["secret-3", legacy_secret_id(new)]
    assert sub.legacy_secrets == {legacy_secret_id(new): new}
    sub.mutate(sub.rotate_secret("secret-4", at=after, grace=timedelta(hours=24)))
    assert sub.legacy_secrets == {}


def test_update_changes_only_what_differs() -> None:
    sub = new_subscription()
    assert sub.update(url=URL, event_types=["referral.invited"], allow_private=False) == []
    events = sub.update(url="https://other.example/h", allow_private=False)
    assert events[0].data["changes"] == {"url": "https://other.example/h"}
    with pytest.raises(RuleViolation) as refused:
        sub.update(url="http://10.0.0.1/", allow_private=False)
    assert refused.value.field == "url"


def test_endpoint_failing_for_a_long_stretch_is_disabled() -> None:
    policy = DisablePolicy(failing_for=timedelta(days=5))
    sub = new_subscription()
    first = sub.record_delivery_outcome(succeeded=False, at=T0, policy=policy)
    assert [e.type for e in first] == ["subscription-failing"]
    sub.mutate(first)
    assert sub.record_delivery_outcome(succeeded=False, at=T0 + timedelta(days=4), policy=policy) == []
    later = sub.record_delivery_outcome(succeeded=False, at=T0 + timedelta(days=5), policy=policy)
    assert [e.type for e in later] == ["subscription-disabled"]
    assert later[0].data["failing_since"] == "2026-06-01T09:00:00Z"
    sub.mutate(later)
    assert sub.status is SubscriptionStatus.DISABLED
    assert not sub.wants("referral.invited")
    assert sub.record_delivery_outcome(succeeded=False, at=T0 + timedelta(days=6), policy=policy) == []
    sub.mutate(sub.enable(at=T0 + timedelta(days=7)))
    assert sub.status is SubscriptionStatus.ACTIVE and sub.failing_since is None


def test_a_success_ends_the_failing_stretch() -> None:
    policy = DisablePolicy(failing_for=timedelta(days=5))
    sub = new_subscription()
    sub.mutate(sub.record_delivery_outcome(succeeded=False, at=T0, policy=policy))
    recovered = sub.record_delivery_outcome(succeeded=True, at=T0 + timedelta(days=1), policy=policy)
    assert [e.type for e in recovered] == ["subscription-recovered"]
    sub.mutate(recovered)
    assert sub.record_delivery_outcome(succeeded=True, at=T0 + timedelta(days=2), policy=policy) == []
    assert sub.record_delivery_outcome(succeeded=False, at=T0 + timedelta(days=6), policy=policy)[0].type == (
        "subscription-failing"
    )


def test_zero_tolerance_policy_disables_on_first_failure() -> None:
    sub = new_subscription()
    events = sub.record_delivery_outcome(succeeded=False, at=T0, policy=DisablePolicy(timedelta(0)))
    assert [e.type for e in events] == ["subscription-failing", "subscription-disabled"]


def test_replay_equals_mutate() -> None:
    sub = new_subscription()
    history = [
        *Subscription.create(
            "sub-1", owner=PROVIDER, url=URL, event_types=["referral.invited"], secret_id=sub.secret_id, at=T0,
            allow_private=False,
        ),
        *sub.disable(reason="by_owner", at=T0),
    ]
    replayed = Subscription.replay("sub-1", [(e.type, e.data) for e in history])
    assert replayed.status is SubscriptionStatus.DISABLED and replayed.version == 2


# --- planning ----------------------------------------------------------------------------------


def test_webhook_per_wanting_subscription_and_email_only_as_fallback() -> None:
    wants = new_subscription("sub-a")
    other_type = new_subscription("sub-b", event_types=["shortlist.updated"])
    other_tenant = new_subscription("sub-c", owner=OTHER_PROVIDER)
    planned = plan_deliveries(request(), [wants, other_type, other_tenant])
    assert [(p.channel, p.subscription_id) for p in planned] == [(Channel.WEBHOOK, "sub-a")]
    always = plan_deliveries(request(), [wants], email_always=True)
    assert [p.channel for p in always] == [Channel.WEBHOOK, Channel.EMAIL]


def test_provider_without_webhook_still_hears_by_email() -> None:
    planned = plan_deliveries(request(), [new_subscription(owner=OTHER_PROVIDER)])
    assert [(p.channel, p.target) for p in planned] == [(Channel.EMAIL, "admissions@riverside.example")]
    assert plan_deliveries(request(email=None), []) == []


def test_disabled_subscription_gets_nothing() -> None:
    sub = new_subscription()
    sub.mutate(sub.disable(reason="by_owner", at=T0))
    assert [p.channel for p in plan_deliveries(request(), [sub])] == [Channel.EMAIL]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"notification_id": ""}, "notification_id"),
        ({"webhook_type": "nope"}, "webhook_type"),
        ({"recipient": {"role": "provider"}}, "recipient"),
        ({"data": [1]}, "data"),
    ],
)
def test_malformed_requests_are_refused(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(RuleViolation) as refused:
        request(**overrides)
    assert refused.value.field == field


# --- retry schedule ----------------------------------------------------------------------------


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


# --- deliveries --------------------------------------------------------------------------------


def test_scheduled_delivery_carries_a_stable_body_and_id() -> None:
    d = scheduled_delivery()
    assert d.status is DeliveryStatus.PENDING
    assert d.message_id == "msg_n-1"
    assert d.next_attempt_at == T0
    body = json.loads(d.body)
    assert body == {
        "type": "referral.invited",
        "timestamp": "2026-06-01T09:00:00Z",
        "data": {"referral_id": "r-1", "age_at_start": 12, "district": "Croydon"},
    }


def test_fails_twice_then_succeeds() -> None:
    d = scheduled_delivery()
    policy = RetryPolicy(jitter=0)
    first = d.record_attempt(outcome(503), policy=policy, jitter_sample=0.5)
    assert [e.type for e in first] == ["delivery-attempted"]
    assert first[0].data["next_attempt_at"] == "2026-06-01T09:00:05Z"
    d.mutate(first)
    d.mutate(d.record_attempt(outcome(None, T0 + timedelta(seconds=5)), policy=policy, jitter_sample=0.5))
    assert d.next_attempt_at == T0 + timedelta(seconds=35)
    last = d.record_attempt(outcome(200, T0 + timedelta(seconds=35)), policy=policy, jitter_sample=0.5)
    assert [e.type for e in last] == ["delivery-attempted", "delivery-succeeded"]
    d.mutate(last)
    assert d.status is DeliveryStatus.DELIVERED
    assert [a.attempt for a in d.attempts] == [1, 2, 3]
    assert d.next_attempt_at is None
    with pytest.raises(InvalidTransition):
        d.record_attempt(outcome(200), policy=policy, jitter_sample=0)


@pytest.mark.parametrize("code", [400, 410])
def test_other_4xx_is_not_retried(code: int) -> None:
    d = scheduled_delivery()
    events = d.record_attempt(outcome(code), policy=RetryPolicy(), jitter_sample=0.5)
    assert [e.type for e in events] == ["delivery-attempted", "delivery-failed"]
    failed = events[1].data
    assert {k: failed[k] for k in ("delivery_id", "attempts", "status_code", "reason", "failed_at")} == {
        "delivery_id": "d-1", "attempts": 1, "status_code": code, "reason": "rejected",
        "failed_at": "2026-06-01T09:00:00Z",
    }
    assert failed["request"]["notification_id"] == "n-1"
    assert failed["request"]["data"]["district"] == "Croydon"


def test_last_attempt_fails_the_delivery() -> None:
    d = scheduled_delivery()
    policy = RetryPolicy(max_attempts=3)
    at = T0
    for _ in range(2):
        d.mutate(d.record_attempt(outcome(500, at), policy=policy, jitter_sample=0.5))
        assert d.status is DeliveryStatus.PENDING
        at = d.next_attempt_at
    events = d.record_attempt(outcome(500, at), policy=policy, jitter_sample=0.5)
    assert events[-1].type == "delivery-failed"
    assert events[-1].data["reason"] == "attempts_exhausted"
    assert events[0].data["next_attempt_at"] is None
    d.mutate(events)
    assert d.status is DeliveryStatus.FAILED


def test_retry_after_on_429_is_honoured() -> None:
    d = scheduled_delivery()
    events = d.record_attempt(
        outcome(429, retry_after=timedelta(minutes=10)), policy=RetryPolicy(), jitter_sample=0.5
    )
    assert events[0].data["next_attempt_at"] == "2026-06-01T09:10:00Z"


def test_manual_retry_starts_a_fresh_round_with_the_same_message() -> None:
    d = scheduled_delivery()
    policy = RetryPolicy(max_attempts=1)
    d.mutate(d.record_attempt(outcome(500), policy=policy, jitter_sample=0))
    assert d.status is DeliveryStatus.FAILED
    later = T0 + timedelta(hours=1)
    d.mutate(d.request_retry(at=later, requested_by=PROVIDER))
    assert d.status is DeliveryStatus.PENDING and d.next_attempt_at == later
    events = d.record_attempt(outcome(200, later), policy=policy, jitter_sample=0)
    assert events[0].data["attempt"] == 2
    d.mutate(events)
    assert d.status is DeliveryStatus.DELIVERED and d.message_id == "msg_n-1"
    d.mutate(d.request_retry(at=later, requested_by=PROVIDER))
    with pytest.raises(InvalidTransition):
        d.request_retry(at=later, requested_by=PROVIDER)


def test_manual_retry_brings_a_waiting_retry_forward() -> None:
    d = scheduled_delivery()
    d.mutate(d.record_attempt(outcome(500), policy=RetryPolicy(), jitter_sample=0))
    events = d.request_retry(at=T0 + timedelta(seconds=1), requested_by=PROVIDER)
    assert events[0].data["next_attempt_at"] == "2026-06-01T09:00:01Z"


def test_abandon_fails_a_pending_delivery_once() -> None:
    d = scheduled_delivery()
    events = d.abandon(reason="subscription_deleted", at=T0)
    assert events[0].data["reason"] == "subscription_deleted"
    d.mutate(events)
    assert d.abandon(reason="subscription_deleted", at=T0) == []


def test_audit_record_follows_events_md() -> None:
    d = scheduled_delivery()
    events = d.record_attempt(outcome(200), policy=RetryPolicy(), jitter_sample=0)
    record = delivery_recorded(d, settled=events[-1])
    assert {k: record[k] for k in ("notification_id", "delivery_id", "subscription_id", "channel", "status",
                                    "attempts", "status_code")} == {
        "notification_id": "n-1", "delivery_id": "d-1", "subscription_id": "sub-1", "channel": "webhook",
        "status": "delivered", "attempts": 1, "status_code": 200,
    }


def test_visibility_of_deliveries() -> None:
    d = scheduled_delivery()
    assert d.visible_to(PROVIDER)
    assert not d.visible_to(OTHER_PROVIDER)
    assert d.visible_to(Owner("auditor", "ops"))


def test_delivery_filter_checks_values() -> None:
    f = DeliveryFilter.parse(status="failed", event_type="shortlist.updated", channel="email")
    assert f.status is DeliveryStatus.FAILED and f.channel is Channel.EMAIL
    for kwargs, field in (({"status": "lost"}, "status"), ({"event_type": "x"}, "event_type"),
                          ({"channel": "sms"}, "channel")):
        with pytest.raises(RuleViolation) as refused:
            DeliveryFilter.parse(**kwargs)
        assert refused.value.field == field
