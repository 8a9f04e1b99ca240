"""Email alerts: jinja2 templates (plain text + HTML) and SMTP sending with aiosmtplib."""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosmtplib
from jinja2 import Environment, FileSystemLoader, select_autoescape

from shared.vocabulary import now_utc

from .deliveries import Delivery
from .domain import SUBSCRIPTION_DISABLED
from .retries import AttemptOutcome, classify_smtp

if TYPE_CHECKING:
    from .settings import NotificationSettings

TEMPLATES = Path(__file__).parent / "templates"

HEADLINES: dict[str, tuple[str, str]] = {
    "referral.invited": (
        "New placement request: you are invited to offer",
        "A borough in the partnership has raised a placement request that matches your enrolment. "
        "You may submit an offer (weekly fee and start date) before the deadline.",
    ),
    "referral.no_eligible_providers": (
        "No eligible provider for your referral",
        "No approved provider matched this referral. Consider amending it (for example the travel "
        "distance or placement type) or contacting the commissioning team.",
    ),
    "shortlist.updated": (
        "Shortlist updated",
        "The ranked shortlist for your referral has changed.",
    ),
    "offer.accepted": (
        "Your offer has been accepted",
        "The borough has awarded the placement to your offer. The borough will contact you with the "
        "child's details.",
    ),
    "offer.not_selected": (
        "Your offer was not selected",
        "The borough has awarded this placement to another offer. Thank you for offering.",
    ),
    "referral.closed_unfilled": (
        "Referral closed without a placement",
        "The offer deadline passed without an offer; the referral was closed unfilled.",
    ),
    "provider.suspended": (
        "Your organisation has been suspended",
        "Your organisation has been suspended from the Dynamic Purchasing System. You will not be "
        "invited to new referrals until you are reinstated.",
    ),
    "placement.started": (
        "Placement started",
        "The placement has started. Funding, reviews and fee changes are recorded against it from now on.",
    ),
    "placement.ended": (
        "Placement ended",
        "The placement has ended. The place is free again for new referrals.",
    ),
    "placement.review_due": (
        "Placement review due",
        "A review of this placement is due soon (or overdue). Record the review with the progress on each "
        "outcome and the needs profile as it now is.",
    ),
    "fee_change.requested": (
        "Fee change requested",
        "The provider has asked for a change to the weekly fee of this placement. The borough agrees, "
        "agrees in part or declines it.",
    ),
    "fee_change.decided": (
        "Fee change decided",
        "The borough has decided on the requested change to the weekly fee of this placement.",
    ),
    "award.collapsed": (
        "Award collapsed before the start",
        "The placement awarded did not start (the provider withdrew or the start failed).",
    ),
}

_LABELS = {
    "primary_need": "Primary need",
    "secondary_needs": "Secondary needs",
    "age_at_start": "Age at start",
    "gender": "Gender",
    "placement_type": "Placement type",
    "required_from": "Required from",
    "offer_deadline": "Offer deadline",
    "district": "District",
    "weekly_fee_pence": "Weekly fee",
    "reason": "Reason",
    "borough": "Borough",
    "placement_id": "Placement",
    "started_on": "Started on",
    "ended_on": "Ended on",
    "ending": "Ending",
    "review_due": "Review due",
    "overdue": "Overdue",
    "effective_from": "Effective from",
    "decision": "Decision",
    "previous_weekly_fee_pence": "Previous weekly fee",
    "requested_weekly_fee_pence": "Requested weekly fee",
}


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        keep_trailing_newline=True,
    )


_ENV = _environment()


def _display(name: str, value: Any) -> str:
    if name.endswith("_pence") and isinstance(value, int):
        return f"£{value / 100:,.2f}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items() if v is not None)
    return str(value)


def details_of(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The request's (already redacted) data as readable label/value pairs; ids stay out."""
    rows: list[tuple[str, str]] = []
    for name, value in data.items():
        if value is None or name.endswith("_id") or name in ("invited", "entries", "results"):
            continue
        if name == "location" and isinstance(value, Mapping):
            value = value.get("district") or value.get("postcode")
            if not value:
                continue
            name = "district"
        rows.append((_LABELS.get(name, name.replace("_", " ").capitalize()), _display(name, value)))
    return rows


def render_notification(
    *, webhook_type: str, notification_id: str, referral_id: str | None, data: Mapping[str, Any]
) -> RenderedEmail:
    headline, intro = HEADLINES.get(webhook_type, ("placematch notification", ""))
    context = {
        "headline": headline,
        "intro": intro,
        "details": details_of(data),
        "referral_id": referral_id,
        "notification_id": notification_id,
        "webhook_type": webhook_type,
    }
    return RenderedEmail(
        subject=f"[placematch] {headline}",
        text=_ENV.get_template("notification.txt.j2").render(context),
        html=_ENV.get_template("notification.html.j2").render(context),
    )


def render_endpoint_disabled(
    *, subscription_id: str, url: str, failing_since: str | None, disabled_at: str
) -> RenderedEmail:
    context = {
        "subscription_id": subscription_id,
        "url": url,
        "failing_since": failing_since,
        "disabled_at": disabled_at,
    }
    return RenderedEmail(
        subject="[placematch] Your webhook endpoint has been disabled",
        text=_ENV.get_template("endpoint_disabled.txt.j2").render(context),
        html=_ENV.get_template("endpoint_disabled.html.j2").render(context),
    )


def message_for(delivery: Delivery, *, sender: str) -> EmailMessage:
    """The email an email delivery sends: the endpoint-disabled notice, or the notification."""
    if delivery.webhook_type == SUBSCRIPTION_DISABLED:
        rendered = render_endpoint_disabled(
            subscription_id=delivery.data["subscription_id"], url=delivery.data["url"],
            failing_since=delivery.data.get("failing_since"), disabled_at=delivery.data["disabled_at"])
    else:
        rendered = render_notification(
            webhook_type=delivery.webhook_type, notification_id=delivery.notification_id,
            referral_id=delivery.referral_id, data=delivery.data)
    return build_message(rendered, sender=sender, to=delivery.target, message_key=delivery.message_id)


def build_message(rendered: RenderedEmail, *, sender: str, to: str, message_key: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = rendered.subject
    message["Message-ID"] = make_msgid(idstring=message_key, domain="placematch")
    if message_key:
        message["X-Placematch-Notification"] = message_key
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: NotificationSettings) -> SmtpConfig:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.email_sender,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            timeout_seconds=settings.webhook_timeout_seconds,
        )


async def send_email(message: EmailMessage, config: SmtpConfig) -> AttemptOutcome:
    """Send one message; the SMTP reply code decides success, retry or refusal."""
    started = time.perf_counter()
    attempted_at = now_utc()
    code: int | None = None
    error: str | None = None
    try:
        _, reply = await aiosmtplib.send(
            message,
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            start_tls=config.starttls,
            timeout=config.timeout_seconds,
        )
        code = int(reply.split(" ", 1)[0]) if reply[:3].isdigit() else 250
    except aiosmtplib.SMTPRecipientsRefused as refused:
        first = refused.recipients[0] if refused.recipients else None
        code = first.code if first is not None else 550
        error = str(refused)
    except aiosmtplib.SMTPResponseException as refused:
        code = refused.code
        error = refused.message
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as failure:
        error = f"{type(failure).__name__}: {failure}"
    latency_ms = int((time.perf_counter() - started) * 1000)
    return AttemptOutcome(
        attempted_at=attempted_at,
        status_code=code,
        latency_ms=latency_ms,
        result=classify_smtp(code),
        error=error,
    )
