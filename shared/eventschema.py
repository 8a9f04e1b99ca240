"""JSON Schema of every event's `data` and every webhook payload (issue 15, item 2).

The pydantic models live next to the code that emits them (`services/<svc>/events_schema.py`);
this module collects them into one catalogue: `(type, data version) -> model`. Each model
describes today's payload exactly as EVENTS.md does (required fields required; `extra="allow"`
because services may add fields, never rename them). `schema_of(type, version)` is what
`GET /schemas/{type}/v{version}.json` serves and what a CloudEvent's `dataschema` names.
"""
from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, ConfigDict

SERVICES = ("enrolment", "referral", "matching", "notification", "placement")
SCHEMA_BASE = "https://placematch.example/schemas"
"""`dataschema` is `/schemas/{type}/v{version}.json`, relative to any service (all serve all)."""


class EventData(BaseModel):
    """Base of every event data model: fields may be added by later versions, never renamed."""

    model_config = ConfigDict(extra="allow")


def catalogue() -> dict[tuple[str, int], type[BaseModel]]:
    """Every event type version with its model, from each service's `events_schema.EVENTS`."""
    found: dict[tuple[str, int], type[BaseModel]] = {}
    for name in SERVICES:
        module = importlib.import_module(f"services.{name}.events_schema")
        found.update(module.EVENTS)
    from shared import dlq_schema
    found.update(dlq_schema.EVENTS)
    return found


def webhooks() -> dict[str, type[BaseModel]]:
    """Every webhook type with the model of its `data` (notification's document, `webhooks`)."""
    from services.notification import events_schema
    return dict(events_schema.WEBHOOKS)


def topics() -> dict[str, list[str]]:
    """Topic -> the event types published on it."""
    out: dict[str, list[str]] = {}
    for name in SERVICES:
        module = importlib.import_module(f"services.{name}.events_schema")
        for topic, types in module.TOPICS.items():
            out.setdefault(topic, [])
            out[topic] += [t for t in types if t not in out[topic]]
    from shared import dlq_schema
    for topic, types in dlq_schema.TOPICS.items():
        out.setdefault(topic, [])
        out[topic] += [t for t in types if t not in out[topic]]
    return out


def schema_path(type_: str, version: int) -> str:
    return f"/schemas/{type_}/v{version}.json"


def schema_of(type_: str, version: int) -> dict[str, Any] | None:
    model = catalogue().get((type_, version))
    if model is None:
        return None
    schema = model.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": schema_path(type_, version),
            "title": f"{type_} v{version}", **{k: v for k, v in schema.items() if k != "title"}}


def webhook_schema_of(type_: str) -> dict[str, Any] | None:
    model = webhooks().get(type_)
    if model is None:
        return None
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"/schemas/webhooks/{type_}.json",
            "title": f"webhook {type_}", **{k: v for k, v in model.model_json_schema().items() if k != "title"}}


def dumps(schema: dict[str, Any]) -> bytes:
    import orjson
    return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)


_known: frozenset[tuple[str, int]] | None = None


def dataschema_of(type_: str, version: int) -> str | None:
    """The `dataschema` of a new event: its schema's path, or None for a type without a published
    schema (a service's own store-only events)."""
    global _known
    if _known is None:
        _known = frozenset(catalogue())
    return schema_path(type_, version) if (type_, version) in _known else None
