"""HTTP API of the notification service: subscriptions and the delivery log."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from shared.auth import Principal, require
from shared.errors import InvalidTransition, NotFound, RuleViolation
from shared.events import dumps, loads
from shared.idempotency import AnswerPolicy

from . import projections
from .domain import (
    Channel,
    Delivery,
    DeliveryFilter,
    Owner,
    Subscription,
    SubscriptionStatus,
    iso,
    new_signing_secret,
)
from .vault import SecretVault, new_secret_id

router = APIRouter(tags=["notification"])

SUBSCRIBERS = ("provider", "borough")
OVERSEERS = ("commissioner", "auditor")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="http(s) endpoint of your portal", examples=["https://portal.example/hooks/placematch"])
    event_types: list[str] = Field(description="webhook types to receive", examples=[["referral.invited"]])
    contact_email: str | None = Field(
        None, description="who to tell if the endpoint keeps failing and is disabled")


class SubscriptionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    event_types: list[str] | None = None
    contact_email: str | None = None


def _owner(who: Principal) -> Owner:
    return Owner(role=who.role, tenant=who.tenant)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _check_email(value: str | None) -> str | None:
    if value is not None and not _EMAIL.match(value):
        raise RuleViolation("contact_email must be an email address.", field="contact_email", rule="email")
    return value


def _runtime(request: Request) -> Any:
    return request.app.state.runtime


def _settings(request: Request) -> Any:
    return request.app.state.notification_settings


async def _project(conn: Any, _aggregate: Any, envelopes: Any) -> None:
    await projections.project(conn, envelopes)


def _projecting(request: Request, *, storing: tuple[str, str, datetime] | None = None) -> Any:
    """`after` for a subscription command: the read models, and the sealed secrets kept in step
    (a rotation or deletion retires secrets), in the same transaction as the events. With
    `storing` = (secret id, secret, at), the new secret the events name is sealed in first."""
    vault: SecretVault = request.app.state.vault

    async def after(conn: Any, aggregate: Any, envelopes: Any) -> None:
        if storing is not None:
            secret_id, secret, at = storing
            await vault.put(conn, aggregate.id, secret_id, vault.seal(secret), at)
        await projections.project(conn, envelopes)
        await vault.follow(conn, envelopes)

    return after


class SecretShownOnce(AnswerPolicy):
    """A secret is shown in the first answer only: the answer an Idempotency-Key keeps for a retry
    has `secret` null and says so (rotate the secret if that first answer was lost)."""

    def kept(self, status: int, body: bytes) -> bytes:
        try:
            answer = loads(body) if 200 <= status < 300 and body else None
        except ValueError:
            return body
        if not isinstance(answer, dict) or answer.get("secret") is None:
            return body
        note = ("The secret is shown only in the first answer to this request; if that was lost, rotate it: "
                f"POST /subscriptions/{answer['id']}/rotate-secret.")
        return dumps({**answer, "secret": None, "secret_note": note})


async def _subscription_view(request: Request, subscription_id: str) -> dict[str, Any]:
    async with _runtime(request).db.read() as conn:
        view = await projections.get_subscription(conn, subscription_id)
    assert view is not None
    return view


@router.post("/subscriptions", status_code=201, summary="Register a webhook endpoint (the secret is shown once)")
async def create_subscription(
    body: SubscriptionIn, request: Request, response: Response, who: Principal = Depends(require(*SUBSCRIBERS))
) -> dict[str, Any]:
    runtime, settings = _runtime(request), _settings(request)
    contact_email = _check_email(body.contact_email)
    subscription_id = str(uuid.uuid4())
    secret, secret_id, at = new_signing_secret(), new_secret_id(), _now()
    await runtime.store.execute(
        Subscription, subscription_id,
        lambda _s: Subscription.create(
            subscription_id, owner=_owner(who), url=body.url, event_types=body.event_types, secret_id=secret_id,
            at=at, allow_private=settings.webhook_allow_private, contact_email=contact_email),
        topic=None, after=_projecting(request, storing=(secret_id, secret, at)),
    )
    response.headers["Location"] = f"/subscriptions/{subscription_id}"
    view = await _subscription_view(request, subscription_id)
    return {**view, "secret": secret}


@router.get("/subscriptions", summary="Your subscriptions (commissioners and auditors see all)")
async def list_subscriptions(
    request: Request, who: Principal = Depends(require(*SUBSCRIBERS, *OVERSEERS))
) -> dict[str, Any]:
    viewer = None if who.role in OVERSEERS else _owner(who)
    async with _runtime(request).db.read() as conn:
        return {"subscriptions": await projections.list_subscriptions(conn, viewer)}


@router.get("/subscriptions/{subscription_id}")
async def get_subscription(
    subscription_id: str, request: Request, who: Principal = Depends(require(*SUBSCRIBERS, *OVERSEERS))
) -> dict[str, Any]:
    async with _runtime(request).db.read() as conn:
        view = await projections.get_subscription(conn, subscription_id)
    if view is None or view["status"] == "deleted" or (
        who.role not in OVERSEERS and view["owner"] != _owner(who).as_dict()
    ):
        raise NotFound(f"No subscription {subscription_id}.")
    return view


async def _owned_command(request: Request, subscription_id: str, who: Principal, command: Any,
                         *, storing: tuple[str, str, datetime] | None = None) -> Subscription:
    def decide(subscription: Subscription) -> Any:
        subscription.ensure_owned_by(_owner(who))
        return command(subscription)

    subscription, _ = await _runtime(request).store.execute(
        Subscription, subscription_id, decide, topic=None, after=_projecting(request, storing=storing))
    return subscription


@router.patch("/subscriptions/{subscription_id}", summary="Change the URL, event types or contact email")
async def update_subscription(
    subscription_id: str, body: SubscriptionPatch, request: Request, who: Principal = Depends(require(*SUBSCRIBERS))
) -> dict[str, Any]:
    contact_email = _check_email(body.contact_email)
    allow_private = _settings(request).webhook_allow_private
    await _owned_command(request, subscription_id, who, lambda s: s.update(
        url=body.url, event_types=body.event_types, contact_email=contact_email, allow_private=allow_private))
    return await _subscription_view(request, subscription_id)


@router.delete("/subscriptions/{subscription_id}", status_code=204, response_class=Response)
async def delete_subscription(
    subscription_id: str, request: Request, who: Principal = Depends(require(*SUBSCRIBERS))
) -> Response:
    await _owned_command(request, subscription_id, who, lambda s: s.delete(at=_now()))
    return Response(status_code=204)


@router.post("/subscriptions/{subscription_id}/rotate-secret",
             summary="New signing secret (shown once); the old one keeps signing during a grace period")
async def rotate_secret(
    subscription_id: str, request: Request, who: Principal = Depends(require(*SUBSCRIBERS))
) -> dict[str, Any]:
    secret, secret_id, at = new_signing_secret(), new_secret_id(), _now()
    grace = _settings(request).secret_grace
    subscription = await _owned_command(
        request, subscription_id, who, lambda s: s.rotate_secret(secret_id, at=at, grace=grace),
        storing=(secret_id, secret, at))
    answer = {
        "id": subscription_id,
        "secret": secret,
        "previous_secret_valid_until": iso(subscription.previous_valid_until) if subscription.previous_valid_until else None,
    }
    return answer


@router.post("/subscriptions/{subscription_id}/enable", summary="Resume deliveries to a disabled endpoint")
async def enable_subscription(
    subscription_id: str, request: Request, who: Principal = Depends(require(*SUBSCRIBERS))
) -> dict[str, Any]:
    await _owned_command(request, subscription_id, who, lambda s: s.enable(at=_now()))
    return await _subscription_view(request, subscription_id)


@router.post("/subscriptions/{subscription_id}/disable", summary="Pause deliveries to an endpoint")
async def disable_subscription(
    subscription_id: str, request: Request, who: Principal = Depends(require(*SUBSCRIBERS))
) -> dict[str, Any]:
    await _owned_command(request, subscription_id, who, lambda s: s.disable(reason="by_owner", at=_now()))
    return await _subscription_view(request, subscription_id)


@router.get("/deliveries", summary="Delivery log: every attempt with its time, status code and latency")
async def list_deliveries(
    request: Request,
    subscription_id: str | None = None,
    status: str | None = Query(None, description="pending | delivered | failed"),
    event_type: str | None = Query(None, description="a webhook type, e.g. referral.invited"),
    channel: str | None = Query(None, description="webhook | email"),
    limit: int = Query(100, ge=1, le=500),
    before: str | None = Query(None, description="only deliveries created before this instant (paging)"),
    who: Principal = Depends(require(*SUBSCRIBERS, *OVERSEERS)),
) -> dict[str, Any]:
    filters = DeliveryFilter.parse(subscription_id=subscription_id, status=status, event_type=event_type,
                                   channel=channel)
    viewer = None if who.role in OVERSEERS else _owner(who)
    async with _runtime(request).db.read() as conn:
        return {"deliveries": await projections.list_deliveries(conn, viewer, filters, limit=limit, before=before)}


async def _visible_delivery(request: Request, delivery_id: str, who: Principal) -> dict[str, Any]:
    async with _runtime(request).db.read() as conn:
        view = await projections.get_delivery(conn, delivery_id)
    if view is None or (who.role not in OVERSEERS and view["recipient"] != _owner(who).as_dict()):
        raise NotFound(f"No delivery {delivery_id}.")
    return view


@router.get("/deliveries/{delivery_id}")
async def get_delivery(
    delivery_id: str, request: Request, who: Principal = Depends(require(*SUBSCRIBERS, *OVERSEERS))
) -> dict[str, Any]:
    return await _visible_delivery(request, delivery_id, who)


@router.post("/deliveries/{delivery_id}/retry", status_code=202,
             summary="Redeliver now (same webhook-id and body, a fresh round of retries)")
async def retry_delivery(
    delivery_id: str, request: Request, who: Principal = Depends(require(*SUBSCRIBERS, "commissioner"))
) -> dict[str, Any]:
    runtime = _runtime(request)
    view = await _visible_delivery(request, delivery_id, who)
    if view["channel"] == Channel.WEBHOOK.value and view["subscription_id"]:
        subscription = await runtime.store.load(Subscription, view["subscription_id"])
        if subscription.status is not SubscriptionStatus.ACTIVE:
            raise InvalidTransition(
                f"Subscription {subscription.id} is {subscription.status.value}; enable it before redelivering.",
                field="subscription_id", rule="subscription_active")
    await runtime.store.execute(
        Delivery, delivery_id, lambda d: d.request_retry(at=_now(), requested_by=_owner(who)),
        topic=None, after=_project)
    request.app.state.dispatcher.wake()
    return await _visible_delivery(request, delivery_id, who)
