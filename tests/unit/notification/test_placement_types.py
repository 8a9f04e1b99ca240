"""The six placement webhook types (issue 16): accepted, planned, emailed to a remembered address."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.notification.domain import WEBHOOK_TYPES, Channel
from services.notification.emails import HEADLINES, render_notification
from services.notification.planning import PLACEMENT_TYPES, parse_request, plan_deliveries, with_remembered_email
from tests.support.notification import new_subscription, request

SIX = ("placement.started", "placement.ended", "placement.review_due", "fee_change.requested",
       "fee_change.decided", "award.collapsed")


def test_the_six_types_are_known_and_have_a_headline() -> None:
    assert set(SIX) == PLACEMENT_TYPES and set(SIX) <= WEBHOOK_TYPES
    for kind in SIX:
        assert kind in HEADLINES
        assert parse_request(request(webhook_type=kind).to_data()).webhook_type == kind


@pytest.mark.parametrize("kind", SIX)
def test_a_subscription_wanting_the_type_gets_the_webhook(kind: str) -> None:
    wants = new_subscription("sub-a", event_types=[kind])
    other = new_subscription("sub-b", event_types=["referral.invited"])
    planned = plan_deliveries(request(webhook_type=kind, email=None), [wants, other])
    assert [(p.channel, p.subscription_id) for p in planned] == [(Channel.WEBHOOK, "sub-a")]


def test_placement_request_without_address_takes_the_remembered_one() -> None:
    bare = request(webhook_type="placement.ended", email=None)
    filled = with_remembered_email(bare, "office@croydon.example")
    assert filled.email == "office@croydon.example"
    assert [(p.channel, p.target) for p in plan_deliveries(filled, [])] == [(Channel.EMAIL, "office@croydon.example")]
    assert with_remembered_email(bare, None) is bare
    own = request(webhook_type="placement.ended", email="named@x.example")
    assert with_remembered_email(own, "office@croydon.example").email == "named@x.example"
    other = request(webhook_type="shortlist.updated", email=None)  # matching's: unchanged behaviour
    assert with_remembered_email(other, "office@croydon.example").email is None


def test_placement_email_renders_dates_and_fees_without_ids() -> None:
    rendered = render_notification(webhook_type="fee_change.decided", notification_id="n-1", referral_id=None,
                                   data={"placement_id": "pl-1", "provider_id": "p-1", "borough": "croydon",
                                         "decision": "agreed_in_part", "weekly_fee_pence": 410000,
                                         "effective_from": "2027-04-01"})
    assert "Fee change decided" in rendered.subject
    assert "£4,100.00" in rendered.text and "2027-04-01" in rendered.text and "pl-1" not in rendered.text


async def test_placement_notice_is_emailed_over_real_smtp_to_the_remembered_address(tmp_path: Path) -> None:
    from services.notification import handlers
    from shared.events import Envelope
    from tests.helpers import wait_for
    from tests.support.notification import run_mail_catcher
    from tests.unit.notification.test_api import make_settings, running

    with run_mail_catcher() as catcher:
        settings = make_settings(tmp_path, email_enabled=True, smtp_port=catcher.port)
        async with running(settings) as (app, _client):
            runtime = app.state.runtime
            earlier = request(notification_id="n-0")  # matching named the provider's address once
            placed = request(notification_id="n-1", webhook_type="placement.ended", email=None,
                             data={"placement_id": "pl-1", "ending": "unplanned", "reason": "breakdown",
                                   "ended_on": "2026-11-30", "provider_id": "prov-1", "borough": "croydon"})
            for r in (earlier, placed):
                async with runtime.db.transaction() as conn:
                    await handlers.react(runtime, conn, Envelope(type="notification-requested",
                                                                 subject=r.notification_id, data=r.to_data(),
                                                                 source="placematch/placement"))
            await wait_for(lambda: len(catcher.messages) == 2, timeout=20)
    ended = next(m for m in catcher.messages if "Placement ended" in str(m["Subject"]))
    assert ended["To"] == "admissions@riverside.example"
    assert "breakdown" in ended.get_body(("plain",)).get_content()  # type: ignore[union-attr]
