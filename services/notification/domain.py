"""Notification's own words, which every other module of it uses: who owns and receives (`Owner`),
the channels, the webhook types it carries, and the text form of its instants.

Pure Python: no I/O, no framework. The aggregates and their rules live by concern:
`subscriptions.py` (webhook endpoints and their secrets), `deliveries.py` (one notification on its
way to one endpoint), `planning.py` (which webhooks and emails a request yields), `retries.py`
(outcome classification and backoff), `ssrf.py` (where a webhook may go), `filters.py` (the delivery
log's filters). Time and randomness (jitter, secrets) come in as arguments so every rule is testable.

Events of this service (its own store; `subject` = aggregate id):

Subscription stream
  subscription-created        {"subscription_id", "owner": {"role", "tenant"}, "url", "event_types",
                               "contact_email" | null, "secret_id", "created_at"}             (v2)
  subscription-updated        {"subscription_id", "changes": {"url"?, "event_types"?, "contact_email"?}}
  subscription-secret-rotated {"subscription_id", "secret_id", "previous_secret_id", "previous_valid_until",
                               "rotated_at"}                                                      (v2)
  subscription-failing        {"subscription_id", "failing_since"}
  subscription-recovered      {"subscription_id", "recovered_at"}
  subscription-disabled       {"subscription_id", "reason", "disabled_at", "failing_since" | null}
  subscription-enabled        {"subscription_id", "enabled_at"}
  subscription-deleted        {"subscription_id", "deleted_at"}

Delivery stream
  delivery-scheduled          {"delivery_id", "notification_id", "channel", "subscription_id" | null,
                               "target", "webhook_type", "recipient": {"role", "tenant"},
                               "referral_id" | null, "message_id", "body", "data",
                               "scheduled_at", "next_attempt_at"}
  delivery-attempted          {"delivery_id", "attempt", "attempted_at", "status_code" | null,
                               "latency_ms", "error" | null, "result", "next_attempt_at" | null}
  delivery-succeeded          {"delivery_id", "attempts", "status_code" | null, "delivered_at"}
  delivery-failed             {"delivery_id", "attempts", "status_code" | null, "reason", "failed_at"}
  delivery-retry-requested    {"delivery_id", "requested_at", "requested_by", "next_attempt_at"}

Secrets never enter an event: events name them by id, and the secrets themselves are sealed in a
table of their own (`vault.py`), deleted once they stop signing. Version 1 of the two events carried
the secret in clear (`secret`, `previous_secret`); the upcasters in `subscriptions.py` turn those into
ids and keep the clear value in memory only (`Subscription.legacy_secrets`), so old subscriptions go
on signing.
"""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from shared.vocabulary import Recipient, WebhookType, format_instant
from shared.vocabulary import parse_instant as parse_instant

Owner = Recipient
"""Who owns a subscription or receives a notification: a JWT's `role` and `tenant` (the vocabulary's
`Recipient`, so that a request's recipient and a subscription's owner compare equal)."""

WEBHOOK_TYPES: frozenset[str] = frozenset(WebhookType)
SUBSCRIPTION_DISABLED = "subscription.disabled"
"""Internal type of the email telling an owner its endpoint was disabled (never a webhook)."""
SUBSCRIBER_ROLES: frozenset[str] = frozenset({"provider", "borough"})
OVERSEER_ROLES: frozenset[str] = frozenset({"commissioner", "auditor"})


class Channel(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"


def iso(at: datetime) -> str:
    """An instant as notification has always written it (events, webhook bodies): the vocabulary's
    UTC `Z` form, to the second when the instant is a whole second, else to the microsecond (what
    `datetime.isoformat` gave), so that payloads stay byte-identical. Naive datetimes are UTC."""
    return format_instant(at, "seconds" if at.microsecond == 0 else "microseconds")
