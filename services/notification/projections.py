"""Read models of the notification service: subscriptions, the delivery log and its queue.

`deliveries.next_attempt_at` + `status = 'pending'` is the stored retry queue the dispatcher
polls; it is derived from the delivery events, so it survives restarts and can be rebuilt.
Instants are stored as fixed-width ISO text (the vocabulary's `format_instant`), so text order is time order.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import upsert
from shared.events import Envelope, dumps, loads
from shared.vocabulary import format_instant

from .domain import Owner, parse_instant
from .filters import DeliveryFilter

metadata = MetaData()

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("owner_role", String(20), nullable=False),
    Column("owner_tenant", String(100), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_types", Text, nullable=False, doc="JSON list"),
    Column("contact_email", String(320), nullable=True),
    Column("status", String(20), nullable=False),
    Column("failing_since", String(40), nullable=True),
    Column("disabled_reason", String(100), nullable=True),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
)
Index("ix_subscriptions_owner", subscriptions.c.owner_role, subscriptions.c.owner_tenant)

subscription_secrets = Table(
    "subscription_secrets",
    metadata,
    Column("secret_id", String(36), primary_key=True),
    Column("subscription_id", String(36), nullable=False),
    Column("sealed", Text, nullable=False, doc="Fernet token of the whsec_ secret (vault.py); never in an event"),
    Column("created_at", String(40), nullable=False),
    Column("retire_at", String(40), nullable=True, doc="it stops signing then and is deleted (rotation overlap)"),
)
Index("ix_subscription_secrets_subscription", subscription_secrets.c.subscription_id)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("notification_id", String(100), nullable=False),
    Column("subscription_id", String(36), nullable=True),
    Column("channel", String(10), nullable=False),
    Column("target", Text, nullable=False),
    Column("event_type", String(60), nullable=False),
    Column("recipient_role", String(20), nullable=False),
    Column("recipient_tenant", String(100), nullable=False),
    Column("referral_id", String(100), nullable=True),
    Column("message_id", String(120), nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("failure_reason", String(60), nullable=True),
    Column("next_attempt_at", String(40), nullable=True),
    Column("lease_until", String(40), nullable=True, doc="a dispatcher is attempting it until then"),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
)
Index("ix_deliveries_due", deliveries.c.status, deliveries.c.next_attempt_at)
Index("ix_deliveries_recipient", deliveries.c.recipient_role, deliveries.c.recipient_tenant)
Index("ix_deliveries_subscription", deliveries.c.subscription_id)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("delivery_id", String(36), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("attempted_at", String(40), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("result", String(20), nullable=False),
    Column("error", Text, nullable=True),
)

recipient_emails = Table(
    "recipient_emails",
    metadata,
    Column("role", String(20), primary_key=True),
    Column("tenant", String(100), primary_key=True),
    Column("email", String(320), nullable=False),
    Column("updated_at", String(40), nullable=False),
)


def stamp(value: str | None) -> str | None:
    """Event instants (`...Z`, any precision) to the fixed-width stored form."""
    return format_instant(parse_instant(value)) if value else None


async def project(conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
    """Fold recorded events of this service into the read models (same transaction)."""
    for envelope in envelopes:
        handler = _PROJECTORS.get(envelope.type)
        if handler is not None:
            await handler(conn, envelope.subject, envelope.data, stamp(envelope.time) or "")


async def _subscription_created(conn: AsyncConnection, sid: str, data: dict[str, Any], at: str) -> None:
    await upsert(conn, subscriptions, {
        "id": sid, "owner_role": data["owner"]["role"], "owner_tenant": data["owner"]["tenant"],
        "url": data["url"], "event_types": dumps(data["event_types"]).decode(),
        "contact_email": data.get("contact_email"), "status": "active", "failing_since": None,
        "disabled_reason": None, "created_at": stamp(data["created_at"]), "updated_at": at,
    }, ["id"])


async def _subscription_changed(conn: AsyncConnection, sid: str, values: dict[str, Any], at: str) -> None:
    await conn.execute(update(subscriptions).where(subscriptions.c.id == sid).values(**values, updated_at=at))


async def _subscription_updated(conn: AsyncConnection, sid: str, data: dict[str, Any], at: str) -> None:
    changes = dict(data["changes"])
    if "event_types" in changes:
        changes["event_types"] = dumps(changes["event_types"]).decode()
    await _subscription_changed(conn, sid, changes, at)


async def _subscription_failing(conn: AsyncConnection, sid: str, data: dict[str, Any], at: str) -> None:
    await _subscription_changed(conn, sid, {"failing_since": stamp(data["failing_since"])}, at)


async def _subscription_recovered(conn: AsyncConnection, sid: str, data: dict[str, Any], at: str) -> None:
    await _subscription_changed(conn, sid, {"failing_since": None}, at)


async def _subscription_disabled(conn: AsyncConnection, sid: str, data: dict[str, Any], at: str) -> None:
    await _subscription_changed(conn, sid, {"status": "disabled", "disabled_reason": data["reason"]}, at)


async def _subscription_enabled(conn: AsyncConnection, sid: str, data: dict[str, Any], at: str) -> None:
    await _subscription_changed(
        conn, sid, {"status": "active", "disabled_reason": None, "failing_since": None}, at)


async def _subscription_deleted(conn: AsyncConnection, sid: str, data: dict[str, Any], at: str) -> None:
    await _subscription_changed(conn, sid, {"status": "deleted"}, at)


async def _delivery_scheduled(conn: AsyncConnection, did: str, data: dict[str, Any], at: str) -> None:
    await upsert(conn, deliveries, {
        "id": did, "notification_id": data["notification_id"], "subscription_id": data.get("subscription_id"),
        "channel": data["channel"], "target": data["target"], "event_type": data["webhook_type"],
        "recipient_role": data["recipient"]["role"], "recipient_tenant": data["recipient"]["tenant"],
        "referral_id": data.get("referral_id"), "message_id": data["message_id"], "status": "pending",
        "attempts": 0, "last_status_code": None, "last_error": None, "failure_reason": None,
        "next_attempt_at": stamp(data["next_attempt_at"]), "lease_until": None,
        "created_at": stamp(data["scheduled_at"]), "updated_at": at,
    }, ["id"])


async def _delivery_attempted(conn: AsyncConnection, did: str, data: dict[str, Any], at: str) -> None:
    await upsert(conn, delivery_attempts, {
        "delivery_id": did, "attempt": data["attempt"], "attempted_at": stamp(data["attempted_at"]),
        "status_code": data.get("status_code"), "latency_ms": data.get("latency_ms", 0),
        "result": data["result"], "error": data.get("error"),
    }, ["delivery_id", "attempt"])
    await conn.execute(update(deliveries).where(deliveries.c.id == did).values(
        attempts=data["attempt"], last_status_code=data.get("status_code"), last_error=data.get("error"),
        next_attempt_at=stamp(data.get("next_attempt_at")), lease_until=None, updated_at=at))


async def _delivery_succeeded(conn: AsyncConnection, did: str, data: dict[str, Any], at: str) -> None:
    await conn.execute(update(deliveries).where(deliveries.c.id == did).values(
        status="delivered", next_attempt_at=None, lease_until=None, failure_reason=None, updated_at=at))


async def _delivery_failed(conn: AsyncConnection, did: str, data: dict[str, Any], at: str) -> None:
    await conn.execute(update(deliveries).where(deliveries.c.id == did).values(
        status="failed", next_attempt_at=None, lease_until=None, failure_reason=data.get("reason"),
        updated_at=at))


async def _delivery_retry_requested(conn: AsyncConnection, did: str, data: dict[str, Any], at: str) -> None:
    await conn.execute(update(deliveries).where(deliveries.c.id == did).values(
        status="pending", next_attempt_at=stamp(data["next_attempt_at"]), failure_reason=None, updated_at=at))


_PROJECTORS = {
    "subscription-created": _subscription_created,
    "subscription-updated": _subscription_updated,
    "subscription-failing": _subscription_failing,
    "subscription-recovered": _subscription_recovered,
    "subscription-disabled": _subscription_disabled,
    "subscription-enabled": _subscription_enabled,
    "subscription-deleted": _subscription_deleted,
    "delivery-scheduled": _delivery_scheduled,
    "delivery-attempted": _delivery_attempted,
    "delivery-succeeded": _delivery_succeeded,
    "delivery-failed": _delivery_failed,
    "delivery-retry-requested": _delivery_retry_requested,
}


async def remember_email(conn: AsyncConnection, recipient: Owner, email: str, at: str) -> None:
    """The last address a notification named for a tenant: where to warn it if its endpoint dies."""
    await upsert(conn, recipient_emails, {"role": recipient.role, "tenant": recipient.tenant, "email": email,
                                          "updated_at": at}, ["role", "tenant"])


async def email_of(conn: AsyncConnection, owner: Owner) -> str | None:
    return (await conn.execute(select(recipient_emails.c.email).where(
        (recipient_emails.c.role == owner.role) & (recipient_emails.c.tenant == owner.tenant)))).scalar()


# --- queries ---------------------------------------------------------------------------------


def subscription_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "url": row.url, "event_types": loads(row.event_types), "status": row.status,
        "contact_email": row.contact_email, "owner": {"role": row.owner_role, "tenant": row.owner_tenant},
        "failing_since": row.failing_since, "disabled_reason": row.disabled_reason,
        "created_at": row.created_at, "updated_at": row.updated_at,
    }


async def subscription_ids_for(conn: AsyncConnection, recipient: Owner) -> list[str]:
    rows = await conn.execute(select(subscriptions.c.id).where(
        (subscriptions.c.owner_role == recipient.role) & (subscriptions.c.owner_tenant == recipient.tenant)
        & (subscriptions.c.status == "active")).order_by(subscriptions.c.id))
    return [r.id for r in rows]


async def list_subscriptions(conn: AsyncConnection, owner: Owner | None) -> list[dict[str, Any]]:
    query = select(subscriptions).where(subscriptions.c.status != "deleted")
    if owner is not None:
        query = query.where((subscriptions.c.owner_role == owner.role) & (subscriptions.c.owner_tenant == owner.tenant))
    rows = await conn.execute(query.order_by(subscriptions.c.created_at, subscriptions.c.id))
    return [subscription_view(r) for r in rows]


async def get_subscription(conn: AsyncConnection, sid: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(subscriptions).where(subscriptions.c.id == sid))).first()
    return subscription_view(row) if row else None


def _delivery_view(row: Any, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": row.id, "notification_id": row.notification_id, "subscription_id": row.subscription_id,
        "channel": row.channel, "target": row.target, "event_type": row.event_type,
        "recipient": {"role": row.recipient_role, "tenant": row.recipient_tenant},
        "referral_id": row.referral_id, "webhook_id": row.message_id, "status": row.status,
        "attempt_count": row.attempts, "last_status_code": row.last_status_code,
        "failure_reason": row.failure_reason, "next_attempt_at": row.next_attempt_at,
        "created_at": row.created_at, "updated_at": row.updated_at, "attempts": attempts,
    }


async def list_deliveries(conn: AsyncConnection, viewer: Owner | None, filters: DeliveryFilter) -> list[dict[str, Any]]:
    """Newest first; `viewer` None = everything (commissioners, auditors)."""
    conditions: list[ColumnElement[bool]] = []
    if viewer is not None:
        conditions.append((deliveries.c.recipient_role == viewer.role)
                          & (deliveries.c.recipient_tenant == viewer.tenant))
    if filters.subscription_id:
        conditions.append(deliveries.c.subscription_id == filters.subscription_id)
    if filters.status:
        conditions.append(deliveries.c.status == filters.status.value)
    if filters.event_type:
        conditions.append(deliveries.c.event_type == filters.event_type)
    if filters.channel:
        conditions.append(deliveries.c.channel == filters.channel.value)
    if filters.before:
        conditions.append(deliveries.c.created_at < format_instant(filters.before))
    query = select(deliveries).where(and_(true(), *conditions)).order_by(
        deliveries.c.created_at.desc(), deliveries.c.id).limit(filters.limit)
    rows = (await conn.execute(query)).all()
    attempts = await _attempts_of(conn, [r.id for r in rows])
    return [_delivery_view(r, attempts.get(r.id, [])) for r in rows]


async def get_delivery(conn: AsyncConnection, did: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(deliveries).where(deliveries.c.id == did))).first()
    if row is None:
        return None
    return _delivery_view(row, (await _attempts_of(conn, [did])).get(did, []))


async def _attempts_of(conn: AsyncConnection, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    if not ids:
        return {}
    rows = await conn.execute(select(delivery_attempts).where(delivery_attempts.c.delivery_id.in_(ids))
                              .order_by(delivery_attempts.c.delivery_id, delivery_attempts.c.attempt))
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r.delivery_id, []).append({
            "attempt": r.attempt, "attempted_at": r.attempted_at, "status_code": r.status_code,
            "latency_ms": r.latency_ms, "result": r.result, "error": r.error,
        })
    return out


async def claim_due(conn: AsyncConnection, now: str, lease_until: str, limit: int) -> list[str]:
    """Take the lease on up to `limit` due deliveries, earliest due first, in one statement;
    return their ids. The conditions are checked again on each row as it is updated, so two
    dispatchers never both take one delivery."""
    due = select(deliveries.c.id).where(_due(now)).order_by(deliveries.c.next_attempt_at).limit(limit)
    result = await conn.execute(update(deliveries).where(deliveries.c.id.in_(due) & _due(now))
                                .values(lease_until=lease_until)
                                .returning(deliveries.c.id, deliveries.c.next_attempt_at))
    return [r.id for r in sorted(result.all(), key=lambda r: r.next_attempt_at)]


def _due(now: str) -> Any:
    return ((deliveries.c.status == "pending") & (deliveries.c.next_attempt_at <= now)
            & or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < now))


async def release(conn: AsyncConnection, did: str) -> None:
    await conn.execute(update(deliveries).where(deliveries.c.id == did).values(lease_until=None))
