"""Data models of what notification publishes (placematch.audit, placematch.notifications.dlq) and of
every webhook's `data` (the OpenAPI `webhooks` of notification's document; issue 15)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.matching.events_schema import NotificationRequested, Recipient
from services.placement import events_schema as placement
from shared.eventschema import EventData


class DeliveryRecorded(EventData):
    notification_id: str
    delivery_id: str
    subscription_id: str | None
    channel: str
    status: str
    attempts: int
    status_code: int | None
    webhook_type: str
    recipient: Recipient
    referral_id: str | None
    reason: str | None
    recorded_at: str


class DeliveryFailed(EventData):
    delivery_id: str
    attempts: int
    status_code: int | None
    reason: str
    failed_at: str
    channel: str
    subscription_id: str | None
    request: NotificationRequested


EVENTS: dict[tuple[str, int], type[BaseModel]] = {
    ("delivery-recorded", 1): DeliveryRecorded,
    ("delivery-failed", 1): DeliveryFailed,
}
TOPICS = {"placematch.audit": ["delivery-recorded"], "placematch.notifications.dlq": ["delivery-failed"]}


# ------------------------------------------------------------------ webhook payloads (`data`)

class ReferralInvited(EventData):
    """The redacted referral summary: no child_ref, no birth date, age in years, location to district."""

    referral_id: str


class NoEligibleProviders(EventData):
    referral_id: str
    primary_need: str
    placement_type: str
    required_from: str
    providers_considered: int
    failed_rules: dict[str, int]


class ShortlistForProvider(EventData):
    referral_id: str
    policy_version: int
    rank: int
    ranked_offers: int
    offer_id: str
    weekly_fee_pence: int
    quality: str


class OfferAccepted(EventData):
    referral_id: str
    offer_id: str
    weekly_fee_pence: int


class OfferNotSelected(EventData):
    referral_id: str
    offer_id: str


class ClosedUnfilled(EventData):
    referral_id: str
    primary_need: str
    placement_type: str
    required_from: str


class ProviderSuspended(EventData):
    provider_id: str
    reason: str | None


def _with_id(model: type[BaseModel], name: str) -> type[BaseModel]:
    from pydantic import create_model
    return create_model(name, __base__=model, placement_id=(str, ...))


class ShortlistUpdated(EventData):
    """To the borough the whole shortlist-ranked data; to a ranked provider only its own line."""

    referral_id: str
    policy_version: int


WEBHOOKS: dict[str, type[BaseModel]] = {
    "referral.invited": ReferralInvited,
    "referral.no_eligible_providers": NoEligibleProviders,
    "shortlist.updated": ShortlistUpdated,
    "offer.accepted": OfferAccepted,
    "offer.not_selected": OfferNotSelected,
    "referral.closed_unfilled": ClosedUnfilled,
    "provider.suspended": ProviderSuspended,
    "placement.started": _with_id(placement.PlacementStarted, "PlacementStartedWebhook"),
    "placement.ended": _with_id(placement.PlacementEnded, "PlacementEndedWebhook"),
    "placement.review_due": _with_id(placement.PlacementReviewDue, "PlacementReviewDueWebhook"),
    "fee_change.requested": _with_id(placement.FeeChangeRequested, "FeeChangeRequestedWebhook"),
    "fee_change.decided": _with_id(placement.FeeChangeDecided, "FeeChangeDecidedWebhook"),
    "award.collapsed": _with_id(placement.Routed, "AwardCollapsedWebhook"),
}
"""`award.collapsed` to a provider drops next_offer_id, next_provider_id, top_remaining_offer_id and
justification, so its schema requires only the routing fields and the placement id."""


def openapi_webhooks(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the OpenAPI 3.1 `webhooks` object: one POST per webhook type, its body the Standard Webhooks
    payload `{"type", "timestamp", "data"}` signed with the `webhook-id`/`-timestamp`/`-signature` headers."""
    from pydantic.json_schema import models_json_schema

    keys, defs = models_json_schema([(m, "validation") for m in WEBHOOKS.values()],
                                    ref_template="#/components/schemas/Webhook{model}")
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in defs.get("$defs", {}).items():
        schemas[f"Webhook{name}"] = schema
    header = {"required": True, "schema": {"type": "string"}}
    hooks: dict[str, Any] = {}
    for type_, model in WEBHOOKS.items():
        hooks[type_] = {"post": {
            "operationId": "webhook_" + type_.replace(".", "_"),
            "summary": f"{type_} — sent to a subscription that lists it",
            "description": (model.__doc__ or type_).strip(),
            "parameters": [{"name": "webhook-id", "in": "header", **header},
                           {"name": "webhook-timestamp", "in": "header", **header},
                           {"name": "webhook-signature", "in": "header",
                            "description": "Standard Webhooks `v1,<base64 HMAC-SHA256>`; several while rotating",
                            **header}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["type", "timestamp", "data"],
                "properties": {"type": {"const": type_}, "timestamp": {"type": "string", "format": "date-time"},
                               "data": keys[(model, "validation")]}}}}},
            "responses": {"2XX": {"description": "received; anything else is retried, then recorded failed"}},
        }}
    doc["webhooks"] = hooks
    return doc


def install_webhooks(app: Any) -> None:
    """Notification's OpenAPI document carries the `webhooks` object (after shared.openapi built it)."""
    built = app.openapi

    def openapi() -> dict[str, Any]:
        doc = built()
        if "webhooks" not in doc:
            openapi_webhooks(doc)
        return doc

    app.openapi = openapi
