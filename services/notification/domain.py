"""Notification domain: webhook subscriptions, deliveries, the retry schedule and the SSRF guard.

Pure Python: no I/O, no framework. Commands check rules and return `NewEvent`s; `apply` folds
them. Time and randomness (jitter, secrets) come in as arguments so every rule is testable.

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
the secret in clear (`secret`, `previous_secret`); the upcasters below turn those into ids and keep
the clear value in memory only (`Subscription.legacy_secrets`), so old subscriptions go on signing.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import secrets
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from shared.aggregate import Aggregate, NewEvent
from shared.errors import Forbidden, InvalidTransition, NotFound, RuleViolation
from shared.events import registry

WEBHOOK_TYPES: frozenset[str] = frozenset(
    {
        "referral.invited",
        "referral.no_eligible_providers",
        "shortlist.updated",
        "offer.accepted",
        "offer.not_selected",
        "referral.closed_unfilled",
        "provider.suspended",
    }
)
SUBSCRIPTION_DISABLED = "subscription.disabled"
"""Internal type of the email telling an owner its endpoint was disabled (never a webhook)."""
SUBSCRIBER_ROLES: frozenset[str] = frozenset({"provider", "borough"})
SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048


class Channel(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class AttemptResult(StrEnum):
    """How one attempt ended: delivered, worth another try, or refused for good."""

    SUCCEEDED = "succeeded"
    RETRYABLE = "retryable"
    REJECTED = "rejected"


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    DELETED = "deleted"


def iso(at: datetime) -> str:
    """An instant as ISO 8601 UTC with `Z` (EVENTS.md convention); naive datetimes are UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Owner:
    """Who owns a subscription or receives a notification: a JWT's `role` and `tenant`."""

    role: str
    tenant: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "tenant": self.tenant}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Owner:
        return cls(role=str(data["role"]), tenant=str(data["tenant"]))


# --------------------------------------------------------------------------------------------
# SSRF guard
# --------------------------------------------------------------------------------------------


def is_forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for targets a webhook must never reach from inside our network.

    Private, loopback, link-local (cloud metadata at 169.254.169.254), unspecified, multicast,
    reserved and shared (100.64/10) ranges; IPv4-mapped and 6to4/Teredo-wrapped IPv6 addresses are
    judged by the IPv4 address they carry.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None:
            return is_forbidden_address(embedded)
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
        or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED_ADDRESS_SPACE)
        or not address.is_global
    )


_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
_LOCAL_HOST_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a host names literally, including the legacy forms a resolver accepts.

    `2130706433`, `0x7f.1` and `127.1` all mean 127.0.0.1 to `getaddrinfo`, so they are
    normalised with `inet_aton` (a pure parse) rather than trusted as names.
    """
    candidate = host.strip("[]")
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        pass
    if all(part and (part.isdigit() or part.lower().startswith("0x")) for part in candidate.split(".")):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(candidate))
        except OSError:
            return None
    return None


def check_webhook_url(url: str, *, allow_private: bool) -> str:
    """Validate a subscription URL and return it; refuse with `RuleViolation(field="url")`.

    Only absolute http(s) URLs without embedded credentials. Unless `allow_private`, hosts that
    are, or obviously name, private/loopback/link-local targets are refused here; the delivery
    worker checks the resolved addresses again before every attempt (DNS can change).
    """
    if not isinstance(url, str) or not url.strip():
        raise RuleViolation("A webhook URL is required.", field="url", rule="required")
    if len(url) > MAX_URL_LENGTH:
        raise RuleViolation(
            f"The webhook URL is longer than {MAX_URL_LENGTH} characters.", field="url", rule="max_length"
        )
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise RuleViolation("The webhook URL cannot be parsed.", field="url", rule="valid_url") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise RuleViolation(
            "The webhook URL must use http or https.", field="url", rule="http_or_https"
        )
    if not host:
        raise RuleViolation("The webhook URL must name a host.", field="url", rule="valid_url")
    if parts.username is not None or parts.password is not None:
        raise RuleViolation(
            "The webhook URL must not carry credentials; verify our signature instead.",
            field="url",
            rule="no_credentials",
        )
    if not allow_private and is_private_host(host):
        raise RuleViolation(
            f"The webhook URL points at a private, loopback or link-local address ({host}); "
            "use a publicly reachable endpoint.",
            field="url",
            rule="public_address",
        )
    return url.strip()


def is_private_host(host: str) -> bool:
    """True when a host (before any DNS lookup) is a forbidden literal or a local-only name."""
    lowered = host.lower().rstrip(".")
    if lowered == "localhost" or lowered.endswith(_LOCAL_HOST_SUFFIXES):
        return True
    address = literal_address(lowered)
    return address is not None and is_forbidden_address(address)


def check_resolved_addresses(host: str, addresses: Iterable[str], *, allow_private: bool) -> None:
    """Refuse a delivery whose host resolves to any forbidden address (DNS rebinding defence)."""
    if allow_private:
        return
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if is_forbidden_address(address):
            raise Forbidden(
                f"The webhook host {host} resolves to a non-public address ({address}).",
                field="url",
                rule="public_address",
            )


# --------------------------------------------------------------------------------------------
# Subscriptions
# --------------------------------------------------------------------------------------------


def new_signing_secret() -> str:
    """A fresh Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def check_event_types(event_types: Any) -> list[str]:
    if not isinstance(event_types, list) or not event_types:
        raise RuleViolation(
            "Name at least one event type to subscribe to.", field="event_types", rule="non_empty"
        )
    unknown = sorted({str(t) for t in event_types} - WEBHOOK_TYPES)
    if unknown:
        raise RuleViolation(
            f"Unknown event type(s) {', '.join(unknown)}; known: {', '.join(sorted(WEBHOOK_TYPES))}.",
            field="event_types",
            rule="known_webhook_type",
        )
    return sorted(set(event_types))


def check_subscriber(owner: Owner) -> None:
    if owner.role not in SUBSCRIBER_ROLES:
        raise Forbidden(
            f"Only providers and boroughs hold subscriptions; a {owner.role} token cannot.",
        )
    if not owner.tenant:
        raise Forbidden("The token names no tenant.")


@dataclass(frozen=True)
class DisablePolicy:
    """An endpoint that has failed without a single success for `failing_for` is disabled."""

    failing_for: timedelta = timedelta(days=5)


class Subscription(Aggregate):
    """A tenant's webhook endpoint: where to send which event types, and the signing secret."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.owner: Owner | None = None
        self.url: str = ""
        self.event_types: list[str] = []
        self.contact_email: str | None = None
        self.secret_id: str = ""
        self.previous_secret_id: str | None = None
        self.legacy_secrets: dict[str, str] = {}
        """Secrets recorded in clear by version-1 events, by their derived id (`legacy_secret_id`)."""
        self.previous_valid_until: datetime | None = None
        self.status: SubscriptionStatus = SubscriptionStatus.ACTIVE
        self.failing_since: datetime | None = None
        self.created_at: datetime | None = None
        self.disabled_reason: str | None = None

    # -- commands -----------------------------------------------------------------------------

    @staticmethod
    def create(
        subscription_id: str,
        *,
        owner: Owner,
        url: str,
        event_types: Any,
        secret_id: str,
        at: datetime,
        allow_private: bool,
        contact_email: str | None = None,
    ) -> list[NewEvent]:
        """`secret_id` names the signing secret, stored sealed outside the event log (vault.py)."""
        check_subscriber(owner)
        checked_url = check_webhook_url(url, allow_private=allow_private)
        types = check_event_types(event_types)
        return [
            NewEvent(
                "subscription-created",
                {
                    "subscription_id": subscription_id,
                    "owner": owner.as_dict(),
                    "url": checked_url,
                    "event_types": types,
                    "contact_email": contact_email,
                    "secret_id": secret_id,
                    "created_at": iso(at),
                },
            )
        ]

    def update(
        self,
        *,
        url: str | None = None,
        event_types: Any = None,
        contact_email: str | None = None,
        allow_private: bool,
    ) -> list[NewEvent]:
        self._ensure_not_deleted()
        changes: dict[str, Any] = {}
        if url is not None:
            checked = check_webhook_url(url, allow_private=allow_private)
            if checked != self.url:
                changes["url"] = checked
        if event_types is not None:
            types = check_event_types(event_types)
            if types != self.event_types:
                changes["event_types"] = types
        if contact_email is not None and contact_email != self.contact_email:
            changes["contact_email"] = contact_email
        if not changes:
            return []
        return [NewEvent("subscription-updated", {"subscription_id": self.id, "changes": changes})]

    def rotate_secret(self, new_secret_id: str, *, at: datetime, grace: timedelta) -> list[NewEvent]:
        """Replace the secret (by id); the old one keeps signing alongside for `grace`.

        Standard Webhooks lets `webhook-signature` carry several space-separated signatures, so
        receivers switch to the new secret at their own pace without missing a delivery.
        """
        self._ensure_not_deleted()
        return [
            NewEvent(
                "subscription-secret-rotated",
                {
                    "subscription_id": self.id,
                    "secret_id": new_secret_id,
                    "previous_secret_id": self.secret_id,
                    "previous_valid_until": iso(at + grace),
                    "rotated_at": iso(at),
                },
            )
        ]

    def record_delivery_outcome(
        self, *, succeeded: bool, at: datetime, policy: DisablePolicy
    ) -> list[NewEvent]:
        """Track endpoint health: events only on transitions (failing, recovered, disabled)."""
        if self.status is not SubscriptionStatus.ACTIVE:
            return []
        if succeeded:
            if self.failing_since is None:
                return []
            return [NewEvent("subscription-recovered", {"subscription_id": self.id, "recovered_at": iso(at)})]
        if self.failing_since is None:
            events = [
                NewEvent("subscription-failing", {"subscription_id": self.id, "failing_since": iso(at)})
            ]
            if policy.failing_for <= timedelta(0):
                events.append(self._disabled_event("failing", at, failing_since=at))
            return events
        if at - self.failing_since >= policy.failing_for:
            return [self._disabled_event("failing", at, failing_since=self.failing_since)]
        return []

    def disable(self, *, reason: str, at: datetime) -> list[NewEvent]:
        self._ensure_not_deleted()
        if self.status is SubscriptionStatus.DISABLED:
            return []
        return [self._disabled_event(reason, at, failing_since=self.failing_since)]

    def enable(self, *, at: datetime) -> list[NewEvent]:
        self._ensure_not_deleted()
        if self.status is SubscriptionStatus.ACTIVE:
            return []
        return [NewEvent("subscription-enabled", {"subscription_id": self.id, "enabled_at": iso(at)})]

    def delete(self, *, at: datetime) -> list[NewEvent]:
        self._ensure_not_deleted()
        return [NewEvent("subscription-deleted", {"subscription_id": self.id, "deleted_at": iso(at)})]

    # -- queries ------------------------------------------------------------------------------

    def ensure_owned_by(self, owner: Owner) -> None:
        """Another tenant's subscription is reported as not found, so ids do not leak."""
        if self.owner is None or self.owner != owner or self.status is SubscriptionStatus.DELETED:
            raise NotFound(f"No subscription {self.id}.")

    def signing_secret_ids(self, at: datetime) -> list[str]:
        """The ids of the secrets that sign a message sent at `at`: the current one, plus the
        previous one during the rotation grace period."""
        result = [self.secret_id]
        if self.previous_secret_id and self.previous_valid_until and at < self.previous_valid_until:
            result.append(self.previous_secret_id)
        return result

    def wants(self, webhook_type: str) -> bool:
        return self.status is SubscriptionStatus.ACTIVE and webhook_type in self.event_types

    # -- folding ------------------------------------------------------------------------------

    def apply(self, type: str, data: dict[str, Any]) -> None:
        if type == "subscription-created":
            self.owner = Owner.from_dict(data["owner"])
            self.url = data["url"]
            self.event_types = list(data["event_types"])
            self.contact_email = data.get("contact_email")
            self.secret_id = data["secret_id"]
            self.legacy_secrets.update(data.get("legacy_secrets") or {})
            self.created_at = parse_instant(data["created_at"])
        elif type == "subscription-updated":
            changes = data["changes"]
            self.url = changes.get("url", self.url)
            self.event_types = list(changes.get("event_types", self.event_types))
            self.contact_email = changes.get("contact_email", self.contact_email)
        elif type == "subscription-secret-rotated":
            self.secret_id = data["secret_id"]
            self.previous_secret_id = data.get("previous_secret_id")
            self.previous_valid_until = parse_instant(data["previous_valid_until"])
            self.legacy_secrets = {i: s for i, s in {**self.legacy_secrets, **(data.get("legacy_secrets") or {})}.items()
                                   if i in (self.secret_id, self.previous_secret_id)}
        elif type == "subscription-failing":
            self.failing_since = parse_instant(data["failing_since"])
        elif type == "subscription-recovered":
            self.failing_since = None
        elif type == "subscription-disabled":
            self.status = SubscriptionStatus.DISABLED
            self.disabled_reason = data["reason"]
        elif type == "subscription-enabled":
            self.status = SubscriptionStatus.ACTIVE
            self.failing_since = None
            self.disabled_reason = None
        elif type == "subscription-deleted":
            self.status = SubscriptionStatus.DELETED

    # -- helpers ------------------------------------------------------------------------------

    def _ensure_not_deleted(self) -> None:
        if self.owner is None:
            raise NotFound(f"No subscription {self.id}.")
        if self.status is SubscriptionStatus.DELETED:
            raise InvalidTransition(f"Subscription {self.id} was deleted.")

    def _disabled_event(self, reason: str, at: datetime, *, failing_since: datetime | None) -> NewEvent:
        return NewEvent(
            "subscription-disabled",
            {
                "subscription_id": self.id,
                "reason": reason,
                "disabled_at": iso(at),
                "failing_since": iso(failing_since) if failing_since else None,
            },
        )


# --------------------------------------------------------------------------------------------
# Version 1 of the secret-bearing events (secrets in clear)
# --------------------------------------------------------------------------------------------

_LEGACY_SECRET_NAMESPACE = uuid.UUID("0e6f1c52-7a43-4f0b-9d6e-2b8c5a1f3d77")


def legacy_secret_id(secret: str) -> str:
    """The id a secret recorded in clear by a version-1 event goes by: derived from the secret
    (a one-way digest), so the rotation that retires it names the same id as the event that set it."""
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return str(uuid.uuid5(_LEGACY_SECRET_NAMESPACE, digest))


def _created_v1(data: dict[str, Any]) -> dict[str, Any]:
    upcast = {k: v for k, v in data.items() if k != "secret"}
    secret_id = legacy_secret_id(data["secret"])
    return {**upcast, "secret_id": secret_id, "legacy_secrets": {secret_id: data["secret"]}}


def _rotated_v1(data: dict[str, Any]) -> dict[str, Any]:
    upcast = {k: v for k, v in data.items() if k not in ("secret", "previous_secret")}
    secrets_in_clear = {legacy_secret_id(data["secret"]): data["secret"]}
    previous_id = None
    if data.get("previous_secret"):
        previous_id = legacy_secret_id(data["previous_secret"])
        secrets_in_clear[previous_id] = data["previous_secret"]
    return {**upcast, "secret_id": legacy_secret_id(data["secret"]), "previous_secret_id": previous_id,
            "legacy_secrets": secrets_in_clear}


registry.register("subscription-created", 2, {1: _created_v1})
registry.register("subscription-secret-rotated", 2, {1: _rotated_v1})


# --------------------------------------------------------------------------------------------
# Notification requests and delivery planning
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotificationRequest:
    """The `data` of a `notification-requested` event (shared/EVENTS.md)."""

    notification_id: str
    webhook_type: str
    recipient: Owner
    email: str | None
    referral_id: str | None
    data: dict[str, Any]

    @classmethod
    def from_event(cls, data: Mapping[str, Any]) -> NotificationRequest:
        for name in ("notification_id", "webhook_type", "recipient"):
            if not data.get(name):
                raise RuleViolation(f"A notification request needs {name}.", field=name, rule="required")
        recipient = data["recipient"]
        if not isinstance(recipient, Mapping) or not recipient.get("role") or not recipient.get("tenant"):
            raise RuleViolation(
                "A notification request's recipient needs role and tenant.", field="recipient", rule="required"
            )
        if data["webhook_type"] not in WEBHOOK_TYPES:
            raise RuleViolation(
                f"Unknown webhook type {data['webhook_type']}.", field="webhook_type", rule="known_webhook_type"
            )
        payload = data.get("data") or {}
        if not isinstance(payload, Mapping):
            raise RuleViolation("A notification's data must be an object.", field="data", rule="object")
        return cls(
            notification_id=str(data["notification_id"]),
            webhook_type=str(data["webhook_type"]),
            recipient=Owner.from_dict(recipient),
            email=data.get("email") or None,
            referral_id=data.get("referral_id"),
            data=dict(payload),
        )


@dataclass(frozen=True)
class PlannedDelivery:
    channel: Channel
    target: str
    subscription_id: str | None = None


def plan_deliveries(
    request: NotificationRequest, subscriptions: Iterable[Subscription], *, email_always: bool = False
) -> list[PlannedDelivery]:
    """Who gets this notification, and how.

    One webhook per active subscription of the recipient that wants this type. Email goes to the
    request's address when no webhook takes it (so a provider with no portal still hears of every
    invitation), or always when `email_always`.
    """
    webhooks = [
        PlannedDelivery(Channel.WEBHOOK, s.url, s.id)
        for s in sorted(subscriptions, key=lambda s: s.id)
        if s.owner == request.recipient and s.wants(request.webhook_type)
    ]
    planned = list(webhooks)
    if request.email and (email_always or not webhooks):
        planned.append(PlannedDelivery(Channel.EMAIL, request.email))
    return planned


def webhook_body(request: NotificationRequest, *, at: datetime) -> str:
    """The JSON body, serialised once at scheduling so every retry sends the same bytes."""
    return json.dumps(
        {"type": request.webhook_type, "timestamp": iso(at), "data": request.data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def message_id(notification_id: str) -> str:
    """`webhook-id`: one per notification, the same on every attempt and every endpoint, so a
    receiver can de-duplicate."""
    return f"msg_{notification_id}"


# --------------------------------------------------------------------------------------------
# Retry schedule
# --------------------------------------------------------------------------------------------


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
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(when - now, timedelta(0))


# --------------------------------------------------------------------------------------------
# Deliveries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptOutcome:
    """What the worker saw on one attempt."""

    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    result: AttemptResult
    error: str | None = None
    retry_after: timedelta | None = None


@dataclass
class Attempt:
    attempt: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    result: AttemptResult
    error: str | None
    next_attempt_at: datetime | None


class Delivery(Aggregate):
    """One notification on its way to one endpoint (webhook or email), with every attempt."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.notification_id: str = ""
        self.channel: Channel = Channel.WEBHOOK
        self.subscription_id: str | None = None
        self.target: str = ""
        self.webhook_type: str = ""
        self.recipient: Owner | None = None
        self.referral_id: str | None = None
        self.message_id: str = ""
        self.body: str = ""
        self.data: dict[str, Any] = {}
        self.status: DeliveryStatus = DeliveryStatus.PENDING
        self.attempts: list[Attempt] = []
        self.round_attempts: int = 0
        self.next_attempt_at: datetime | None = None
        self.scheduled_at: datetime | None = None

    @staticmethod
    def schedule(
        delivery_id: str,
        *,
        request: NotificationRequest,
        planned: PlannedDelivery,
        at: datetime,
    ) -> list[NewEvent]:
        return [
            NewEvent(
                "delivery-scheduled",
                {
                    "delivery_id": delivery_id,
                    "notification_id": request.notification_id,
                    "channel": planned.channel.value,
                    "subscription_id": planned.subscription_id,
                    "target": planned.target,
                    "webhook_type": request.webhook_type,
                    "recipient": request.recipient.as_dict(),
                    "referral_id": request.referral_id,
                    "message_id": message_id(request.notification_id),
                    "body": webhook_body(request, at=at),
                    "data": request.data,
                    "scheduled_at": iso(at),
                    "next_attempt_at": iso(at),
                },
            )
        ]

    def record_attempt(
        self, outcome: AttemptOutcome, *, policy: RetryPolicy, jitter_sample: float
    ) -> list[NewEvent]:
        """Record one attempt; schedule the next one, or settle the delivery."""
        if self.status is not DeliveryStatus.PENDING:
            raise InvalidTransition(f"Delivery {self.id} is {self.status}; nothing to attempt.")
        number = len(self.attempts) + 1
        round_number = self.round_attempts + 1
        result = outcome.result
        next_at: datetime | None = None
        if result is AttemptResult.RETRYABLE and round_number < policy.max_attempts:
            next_at = outcome.attempted_at + policy.delay(
                round_number, jitter_sample=jitter_sample, retry_after=outcome.retry_after
            )
        events = [
            NewEvent(
                "delivery-attempted",
                {
                    "delivery_id": self.id,
                    "attempt": number,
                    "attempted_at": iso(outcome.attempted_at),
                    "status_code": outcome.status_code,
                    "latency_ms": outcome.latency_ms,
                    "error": outcome.error,
                    "result": result.value,
                    "next_attempt_at": iso(next_at) if next_at else None,
                },
            )
        ]
        if result is AttemptResult.SUCCEEDED:
            events.append(
                NewEvent(
                    "delivery-succeeded",
                    {
                        "delivery_id": self.id,
                        "attempts": number,
                        "status_code": outcome.status_code,
                        "delivered_at": iso(outcome.attempted_at),
                    },
                )
            )
        elif next_at is None:
            reason = "rejected" if result is AttemptResult.REJECTED else "attempts_exhausted"
            events.append(self._failed_event(reason, outcome.attempted_at, outcome.status_code, number))
        return events

    def abandon(self, *, reason: str, at: datetime) -> list[NewEvent]:
        """Give up without attempting, e.g. the subscription was deleted or disabled meanwhile."""
        if self.status is not DeliveryStatus.PENDING:
            return []
        last_code = self.attempts[-1].status_code if self.attempts else None
        return [self._failed_event(reason, at, last_code, len(self.attempts))]

    def request_retry(self, *, at: datetime, requested_by: Owner) -> list[NewEvent]:
        """Redeliver now, with a fresh round of the retry schedule; same `webhook-id` and body."""
        if self.status is DeliveryStatus.PENDING and (self.next_attempt_at is None or self.next_attempt_at <= at):
            raise InvalidTransition(f"Delivery {self.id} is already being delivered.")
        return [
            NewEvent(
                "delivery-retry-requested",
                {
                    "delivery_id": self.id,
                    "requested_at": iso(at),
                    "requested_by": requested_by.as_dict(),
                    "next_attempt_at": iso(at),
                },
            )
        ]

    def visible_to(self, viewer: Owner) -> bool:
        """Recipients see their own deliveries; commissioners and auditors oversee them all."""
        return viewer.role in ("commissioner", "auditor") or viewer == self.recipient

    def apply(self, type: str, data: dict[str, Any]) -> None:
        if type == "delivery-scheduled":
            self.notification_id = data["notification_id"]
            self.channel = Channel(data["channel"])
            self.subscription_id = data.get("subscription_id")
            self.target = data["target"]
            self.webhook_type = data["webhook_type"]
            self.recipient = Owner.from_dict(data["recipient"])
            self.referral_id = data.get("referral_id")
            self.message_id = data["message_id"]
            self.body = data["body"]
            self.data = dict(data.get("data") or {})
            self.scheduled_at = parse_instant(data["scheduled_at"])
            self.next_attempt_at = parse_instant(data["next_attempt_at"])
            self.status = DeliveryStatus.PENDING
        elif type == "delivery-attempted":
            next_at = parse_instant(data["next_attempt_at"]) if data.get("next_attempt_at") else None
            self.attempts.append(
                Attempt(
                    attempt=data["attempt"],
                    attempted_at=parse_instant(data["attempted_at"]),
                    status_code=data.get("status_code"),
                    latency_ms=data.get("latency_ms", 0),
                    result=AttemptResult(data["result"]),
                    error=data.get("error"),
                    next_attempt_at=next_at,
                )
            )
            self.round_attempts += 1
            self.next_attempt_at = next_at
        elif type == "delivery-succeeded":
            self.status = DeliveryStatus.DELIVERED
            self.next_attempt_at = None
        elif type == "delivery-failed":
            self.status = DeliveryStatus.FAILED
            self.next_attempt_at = None
        elif type == "delivery-retry-requested":
            self.status = DeliveryStatus.PENDING
            self.round_attempts = 0
            self.next_attempt_at = parse_instant(data["next_attempt_at"])

    def _failed_event(self, reason: str, at: datetime, status_code: int | None, attempts: int) -> NewEvent:
        """`delivery-failed` also goes to `placematch.notifications.dlq`, so it carries the
        request it failed to deliver: an operator can re-publish it as it stands."""
        return NewEvent(
            "delivery-failed",
            {
                "delivery_id": self.id,
                "attempts": attempts,
                "status_code": status_code,
                "reason": reason,
                "failed_at": iso(at),
                "channel": self.channel.value,
                "subscription_id": self.subscription_id,
                "request": {
                    "notification_id": self.notification_id,
                    "webhook_type": self.webhook_type,
                    "recipient": self.recipient.as_dict() if self.recipient else None,
                    "email": self.target if self.channel is Channel.EMAIL else None,
                    "referral_id": self.referral_id,
                    "data": self.data,
                },
            },
        )


def delivery_recorded(delivery: Delivery, *, settled: NewEvent) -> dict[str, Any]:
    """The `data` of the `delivery-recorded` audit event (shared/EVENTS.md) for a settling event
    (`delivery-succeeded` or `delivery-failed`) of `delivery`."""
    status = "delivered" if settled.type == "delivery-succeeded" else "failed"
    return {
        "notification_id": delivery.notification_id,
        "delivery_id": delivery.id,
        "subscription_id": delivery.subscription_id,
        "channel": delivery.channel.value,
        "status": status,
        "attempts": settled.data["attempts"],
        "status_code": settled.data.get("status_code"),
        "webhook_type": delivery.webhook_type,
        "recipient": delivery.recipient.as_dict() if delivery.recipient else None,
        "referral_id": delivery.referral_id,
        "reason": settled.data.get("reason"),
        "recorded_at": settled.data.get("delivered_at") or settled.data.get("failed_at"),
    }


@dataclass(frozen=True)
class DeliveryFilter:
    """`GET /deliveries` filters."""

    subscription_id: str | None = None
    status: DeliveryStatus | None = None
    event_type: str | None = None
    channel: Channel | None = None

    @classmethod
    def parse(
        cls,
        *,
        subscription_id: str | None = None,
        status: str | None = None,
        event_type: str | None = None,
        channel: str | None = None,
    ) -> DeliveryFilter:
        if status is not None and status not in DeliveryStatus._value2member_map_:
            raise RuleViolation(
                f"status must be one of {', '.join(s.value for s in DeliveryStatus)}.",
                field="status",
                rule="one_of",
            )
        if event_type is not None and event_type not in WEBHOOK_TYPES | {SUBSCRIPTION_DISABLED}:
            raise RuleViolation(f"Unknown event type {event_type}.", field="event_type", rule="known_webhook_type")
        if channel is not None and channel not in Channel._value2member_map_:
            raise RuleViolation("channel must be webhook or email.", field="channel", rule="one_of")
        return cls(
            subscription_id=subscription_id,
            status=DeliveryStatus(status) if status else None,
            event_type=event_type,
            channel=Channel(channel) if channel else None,
        )


__all__: Sequence[str] = [
    "WEBHOOK_TYPES",
    "Attempt",
    "AttemptOutcome",
    "AttemptResult",
    "Channel",
    "Delivery",
    "DeliveryFilter",
    "DeliveryStatus",
    "DisablePolicy",
    "NotificationRequest",
    "Owner",
    "PlannedDelivery",
    "RetryPolicy",
    "Subscription",
    "SubscriptionStatus",
    "check_resolved_addresses",
    "check_webhook_url",
    "classify_http",
    "classify_smtp",
    "delivery_recorded",
    "iso",
    "legacy_secret_id",
    "message_id",
    "new_signing_secret",
    "parse_retry_after",
    "plan_deliveries",
    "webhook_body",
]
