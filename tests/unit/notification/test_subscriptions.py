"""Subscriptions: creation, ownership, rotation, version-1 events, endpoint health."""
from __future__ import annotations

from datetime import timedelta

import pytest

from services.notification.domain import Owner
from services.notification.subscriptions import (
    DisablePolicy,
    Subscription,
    SubscriptionStatus,
    legacy_secret_id,
    new_signing_secret,
)
from shared.errors import Forbidden, InvalidTransition, NotFound, RuleViolation
from shared.events import Envelope
from tests.support.notification import OTHER_PROVIDER, PROVIDER, T0, URL, new_subscription


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
    [([], "non_empty"), ("referral.invited", "non_empty")],  # unknown types: the request model's (test_api)
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
