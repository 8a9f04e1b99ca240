"""Webhook subscriptions: a tenant's endpoint, the types it hears, its signing secrets (by id) and
its health (failing, disabled after failing too long)."""
from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.aggregate import Aggregate, NewEvent
from shared.errors import Forbidden, InvalidTransition, NotFound, RuleViolation
from shared.events import registry

from .domain import SUBSCRIBER_ROLES, Owner, iso, parse_instant
from .ssrf import check_public_url

SECRET_PREFIX = "whsec_"


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    DELETED = "deleted"


def new_signing_secret() -> str:
    """A fresh Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def check_event_types(event_types: Sequence[str]) -> list[str]:
    """A subscription names at least one type (the request model has checked that each is a known
    `WebhookType`); kept sorted, each once."""
    if isinstance(event_types, str) or not event_types:
        raise RuleViolation(
            "Name at least one event type to subscribe to.", field="event_types", rule="non_empty"
        )
    return sorted({str(t) for t in event_types})


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
        event_types: Sequence[str],
        secret_id: str,
        at: datetime,
        allow_private: bool,
        contact_email: str | None = None,
    ) -> list[NewEvent]:
        """`url` is well formed (the request model checked its form); `secret_id` names the signing
        secret, stored sealed outside the event log (vault.py)."""
        check_subscriber(owner)
        checked_url = check_public_url(url, allow_private=allow_private)
        types = check_event_types(event_types)
        return [
            NewEvent(
                "subscription-created",
                {
                    "subscription_id": subscription_id,
                    "owner": owner.to_data(),
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
        event_types: Sequence[str] | None = None,
        contact_email: str | None = None,
        allow_private: bool,
    ) -> list[NewEvent]:
        self._ensure_not_deleted()
        changes: dict[str, Any] = {}
        if url is not None:
            checked = check_public_url(url, allow_private=allow_private)
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
            self.owner = Owner.from_data(data["owner"])
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
            known = {**self.legacy_secrets, **(data.get("legacy_secrets") or {})}
            self.legacy_secrets = {i: s for i, s in known.items() if i in (self.secret_id, self.previous_secret_id)}
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


# --- version 1 of the secret-bearing events (secrets in clear) ----------------------------------

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
