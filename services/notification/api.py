"""HTTP API of the notification service: subscriptions and the delivery log (parse, authorise, call)."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

from shared import paging
from shared.auth import Principal, require
from shared.errors import RuleViolation
from shared.events import dumps, loads
from shared.idempotency import AnswerPolicy
from shared.vocabulary import WebhookType

from . import service
from .deliveries import DeliveryStatus
from .domain import OVERSEER_ROLES, SUBSCRIBER_ROLES, WEBHOOK_TYPES, Channel
from .filters import DELIVERY_TYPES, DeliveryFilter
from .service import NotificationRuntime
from .ssrf import MAX_URL_LENGTH, check_url_form

router = APIRouter(tags=["notification"])

SUBSCRIBERS = ("provider", "borough")
OVERSEERS = ("commissioner", "auditor")
assert set(SUBSCRIBERS) == SUBSCRIBER_ROLES and set(OVERSEERS) == OVERSEER_ROLES
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# --------------------------------------------------------------------------- typed inputs

def _as_pydantic(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A domain check as a validator: its `RuleViolation` becomes the field's error, with its rule."""
    def validate(value: Any) -> Any:
        try:
            return check(value)
        except RuleViolation as violation:
            raise PydanticCustomError(violation.rule or "invalid", "{detail}", {"detail": violation.detail}) from None

    return validate


def _email(value: str | None) -> str | None:
    if value is not None and not _EMAIL.match(value):
        raise PydanticCustomError("email", "contact_email must be an email address.")
    return value


def _known_types(value: Any, handler: Callable[[Any], Any]) -> Any:
    """The types' own check names an unknown one `known_webhook_type` (as always), not `one_of`."""
    try:
        return handler(value)
    except ValidationError as error:
        if isinstance(value, list) and any(e["type"] == "enum" and isinstance(e["input"], str) for e in error.errors()):
            unknown = sorted({str(t) for t in value} - WEBHOOK_TYPES)
            raise PydanticCustomError(
                "known_webhook_type", "Unknown event type(s) {unknown}; known: {known}.",
                {"unknown": ", ".join(unknown), "known": ", ".join(sorted(WEBHOOK_TYPES))}) from None
        raise


def _known_delivery_type(value: Any, handler: Callable[[Any], Any]) -> Any:
    try:
        return handler(value)
    except ValidationError:
        if isinstance(value, str) and value not in DELIVERY_TYPES:
            raise PydanticCustomError("known_webhook_type", "Unknown event type {value}.", {"value": value}) from None
        raise


WebhookUrl = Annotated[str, AfterValidator(_as_pydantic(check_url_form)), Field(
    description=f"absolute http(s) URL of your portal's endpoint, without credentials, at most {MAX_URL_LENGTH} "
                "characters; private and loopback hosts are refused unless the deployment allows them",
    examples=["https://portal.example/hooks/placematch"])]
WebhookTypes = Annotated[list[WebhookType], WrapValidator(_known_types), Field(
    description="webhook types to receive (at least one)", examples=[["referral.invited"]])]
ContactEmail = Annotated[str | None, AfterValidator(_email), Field(
    description="who to tell if the endpoint keeps failing and is disabled")]
DeliveryType = Annotated[WebhookType | Literal["subscription.disabled"], WrapValidator(_known_delivery_type)]
"""A delivery's type: a webhook type, or `SUBSCRIPTION_DISABLED` (the endpoint-disabled email)."""


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl
    event_types: WebhookTypes
    contact_email: ContactEmail = None


class SubscriptionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl | None = None
    event_types: WebhookTypes | None = None
    contact_email: ContactEmail = None


def _runtime(request: Request) -> NotificationRuntime:
    runtime: NotificationRuntime = request.app.state.runtime
    return runtime


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


# --------------------------------------------------------------------------- subscriptions

@router.post("/subscriptions", status_code=201, summary="Register a webhook endpoint (the secret is shown once)")
async def create_subscription(
    body: SubscriptionIn, request: Request, response: Response,
    who: Annotated[Principal, Depends(require(*SUBSCRIBERS))],
) -> dict[str, Any]:
    view, secret = await service.create_subscription(_runtime(request), who=who, url=body.url,
                                                     event_types=body.event_types, contact_email=body.contact_email)
    response.headers["Location"] = f"/subscriptions/{view['id']}"
    return {**view, "secret": secret}


@router.get("/subscriptions", summary="Your subscriptions (commissioners and auditors see all)")
async def list_subscriptions(
    request: Request, response: Response, who: Annotated[Principal, Depends(require(*SUBSCRIBERS, *OVERSEERS))],
    limit: int = Query(100, ge=1, le=500), cursor: str | None = paging.CURSOR,
) -> dict[str, Any]:
    found = await service.list_subscriptions(_runtime(request), who=who)
    offset = paging.offset_of(cursor, 0, maximum=paging.MAX_OFFSET)
    page = found[offset:offset + limit]
    following = paging.offset_page(request, response, offset=offset, limit=limit, returned=len(page), total=len(found))
    return {"subscriptions": page, "next": following}


@router.get("/subscriptions/{subscription_id}")
async def get_subscription(
    subscription_id: str, request: Request, who: Annotated[Principal, Depends(require(*SUBSCRIBERS, *OVERSEERS))]
) -> dict[str, Any]:
    return await service.get_subscription(_runtime(request), who=who, subscription_id=subscription_id)


@router.patch("/subscriptions/{subscription_id}", summary="Change the URL, event types or contact email")
async def update_subscription(
    subscription_id: str, body: SubscriptionPatch, request: Request,
    who: Annotated[Principal, Depends(require(*SUBSCRIBERS))],
) -> dict[str, Any]:
    return await service.update_subscription(_runtime(request), who=who, subscription_id=subscription_id,
                                             url=body.url, event_types=body.event_types,
                                             contact_email=body.contact_email)


@router.delete("/subscriptions/{subscription_id}", status_code=204, response_class=Response)
async def delete_subscription(
    subscription_id: str, request: Request, who: Annotated[Principal, Depends(require(*SUBSCRIBERS))]
) -> Response:
    await service.delete_subscription(_runtime(request), who=who, subscription_id=subscription_id)
    return Response(status_code=204)


@router.post("/subscriptions/{subscription_id}/rotate-secret",
             summary="New signing secret (shown once); the old one keeps signing during a grace period")
async def rotate_secret(
    subscription_id: str, request: Request, who: Annotated[Principal, Depends(require(*SUBSCRIBERS))]
) -> dict[str, Any]:
    answer = await service.rotate_secret(_runtime(request), who=who, subscription_id=subscription_id)
    return answer


@router.post("/subscriptions/{subscription_id}/enable", summary="Resume deliveries to a disabled endpoint")
async def enable_subscription(
    subscription_id: str, request: Request, who: Annotated[Principal, Depends(require(*SUBSCRIBERS))]
) -> dict[str, Any]:
    return await service.enable_subscription(_runtime(request), who=who, subscription_id=subscription_id)


@router.post("/subscriptions/{subscription_id}/disable", summary="Pause deliveries to an endpoint")
async def disable_subscription(
    subscription_id: str, request: Request, who: Annotated[Principal, Depends(require(*SUBSCRIBERS))]
) -> dict[str, Any]:
    return await service.disable_subscription(_runtime(request), who=who, subscription_id=subscription_id)


# --------------------------------------------------------------------------- the delivery log

@router.get("/deliveries", summary="Delivery log: every attempt with its time, status code and latency")
async def list_deliveries(
    request: Request, response: Response,
    who: Annotated[Principal, Depends(require(*SUBSCRIBERS, *OVERSEERS))],
    subscription_id: str | None = None,
    status: DeliveryStatus | None = Query(None, description="pending | delivered | failed"),
    event_type: DeliveryType | None = Query(None, description="a webhook type, e.g. referral.invited"),
    channel: Channel | None = Query(None, description="webhook | email"),
    limit: int = Query(100, ge=1, le=500),
    before: AwareDatetime | None = Query(None, deprecated=True,
                                         description="deprecated (use `cursor`): created before this instant"),
    cursor: str | None = paging.CURSOR,
) -> dict[str, Any]:
    if cursor is not None:
        before = paging.instant_of(cursor)
    filters = DeliveryFilter(subscription_id=subscription_id, status=status,
                             event_type=None if event_type is None else str(event_type), channel=channel,
                             before=before, limit=limit)
    found = await service.list_deliveries(_runtime(request), who=who, filters=filters)
    following = paging.next_page(request, response, {"b": found[-1]["created_at"]} if len(found) >= limit else None)
    return {"deliveries": found, "next": following}


@router.get("/deliveries/{delivery_id}")
async def get_delivery(
    delivery_id: str, request: Request, who: Annotated[Principal, Depends(require(*SUBSCRIBERS, *OVERSEERS))]
) -> dict[str, Any]:
    return await service.get_delivery(_runtime(request), who=who, delivery_id=delivery_id)


@router.post("/deliveries/{delivery_id}/retry", status_code=202,
             summary="Redeliver now (same webhook-id and body, a fresh round of retries)")
async def retry_delivery(
    delivery_id: str, request: Request, who: Annotated[Principal, Depends(require(*SUBSCRIBERS, "commissioner"))]
) -> dict[str, Any]:
    return await service.retry_delivery(_runtime(request), who=who, delivery_id=delivery_id)
