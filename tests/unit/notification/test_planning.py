"""Delivery planning: which webhooks and emails a request yields; requests judged off the topic."""
from __future__ import annotations

import pytest

from services.notification.domain import Channel
from services.notification.planning import plan_deliveries
from shared.errors import RuleViolation
from tests.support.notification import OTHER_PROVIDER, T0, new_subscription, request


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
