"""Email rendering from the jinja2 templates."""
from __future__ import annotations

from services.notification.emails import build_message, render_endpoint_disabled, render_notification


def test_invitation_email_has_text_and_html_with_the_redacted_facts() -> None:
    rendered = render_notification(
        webhook_type="referral.invited",
        notification_id="n-1",
        referral_id="r-1",
        data={"primary_need": "ASD", "age_at_start": 12, "location": {"district": "Croydon"},
              "offer_deadline": "2026-07-01T17:00:00Z", "provider_id": "p-1", "note": "<b>x</b>"},
    )
    assert "invited" in rendered.subject
    assert "Primary need: ASD" in rendered.text
    assert "District: Croydon" in rendered.text
    assert "p-1" not in rendered.text
    assert "<th" in rendered.html and "Croydon" in rendered.html
    assert "&lt;b&gt;x&lt;/b&gt;" in rendered.html  # HTML is autoescaped
    assert "<b>x</b>" in rendered.text


def test_fee_is_shown_in_pounds() -> None:
    rendered = render_notification(
        webhook_type="offer.accepted", notification_id="n", referral_id=None, data={"weekly_fee_pence": 425000}
    )
    assert "£4,250.00" in rendered.text


def test_message_is_multipart_alternative() -> None:
    rendered = render_endpoint_disabled(
        subscription_id="s-1", url="https://portal.example/h", failing_since="2026-06-01T09:00:00Z",
        disabled_at="2026-06-06T09:00:00Z",
    )
    message = build_message(rendered, sender="placematch <no-reply@placematch.local>", to="ops@p.example",
                            message_key="s-1")
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert "https://portal.example/h" in message.get_body(("plain",)).get_content()
