"""The AsyncAPI 3.0 document of every placematch topic (issue 15, item 2).

`python -m shared.asyncapi > docs/asyncapi.yaml` writes it; `tests/unit/test_asyncapi.py` checks the
file is current and `deploy/asyncapi-check.sh` validates it with the AsyncAPI parser. Every service
serves it at `/asyncapi.yaml`. Channels are the topics and their `.dlq` (a consumer that gives up
puts the record there unchanged, so a `.dlq` channel carries its topic's messages too); each message is
one event type version as a structured-mode CloudEvent (`content-type: application/cloudevents+json`,
Kafka key = the CloudEvent `subject`), its `data` the JSON Schema of `shared.eventschema`.
"""
from __future__ import annotations

import sys
from functools import cache
from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

from shared import eventschema

REF = "#/components/schemas/{model}"

SUMMARIES = {
    "placematch.enrolment": "Provider lifecycle (enrolment); key = provider id.",
    "placematch.referral": "Referral lifecycle, offers and awards (referral); key = referral id.",
    "placematch.matching": "Invitations, shortlists and the ranking policy (matching); key = referral id (`policy`).",
    "placematch.notifications": "Requests to notify a recipient (matching, placement); key = notification id.",
    "placematch.audit": "Decision records (matching) and delivery outcomes (notification).",
    "placematch.placement": "Placement lifecycle (placement); key = placement id.",
}


def _envelope_schema() -> dict[str, Any]:
    string = {"type": "string"}
    return {
        "type": "object",
        "description": "A CloudEvents 1.0 event in structured JSON mode with the placematch extensions "
                       "(shared/EVENTS.md).",
        "required": ["id", "source", "type", "specversion", "subject", "time", "datacontenttype", "sequence",
                     "dataversion", "data"],
        "properties": {
            "id": {**string, "format": "uuid"}, "source": {**string, "examples": ["placematch/referral"]},
            "type": string, "specversion": {"const": "1.0"}, "subject": string,
            "time": {**string, "format": "date-time"}, "datacontenttype": {"const": "application/json"},
            "dataschema": {**string, "format": "uri-reference",
                           "description": "`/schemas/{type}/v{dataversion}.json` (events appended since issue 15)"},
            "sequence": {"type": "integer", "minimum": 0,
                         "description": "the event's version in its stream (see EVENTS.md on Sequence)"},
            "dataversion": {"type": "integer", "minimum": 1},
            "correlationid": string, "causationid": string, "actor": string, "actorid": string,
            "traceparent": string, "tracestate": string, "origintime": {**string, "format": "date-time"},
            "data": {"type": "object"},
        },
    }


def _message_name(type_: str, version: int) -> str:
    return f"{type_}.v{version}"


@cache
def document() -> dict[str, Any]:
    catalogue = eventschema.catalogue()
    models = sorted(set(catalogue.values()), key=lambda m: (m.__module__, m.__name__))
    keys, defs = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    schemas: dict[str, Any] = {"CloudEvent": _envelope_schema(), **defs.get("$defs", {})}
    messages: dict[str, Any] = {}
    for (type_, version), model in sorted(catalogue.items()):
        data_ref = keys[(model, "validation")]
        messages[_message_name(type_, version)] = {
            "name": type_, "title": f"{type_} (data version {version})",
            "summary": (model.__doc__ or type_).strip().splitlines()[0],
            "contentType": "application/cloudevents+json",
            "headers": {"type": "object", "properties": {
                "content-type": {"const": "application/cloudevents+json"},
                "placematch-redrive-of": {"type": "string", "description": "on a re-driven dead letter only"}}},
            "payload": {"allOf": [{"$ref": REF.format(model="CloudEvent")}, {
                "type": "object",
                "properties": {"type": {"const": type_}, "dataversion": {"const": version},
                               "dataschema": {"const": eventschema.schema_path(type_, version)}, "data": data_ref}}]},
            "bindings": {"kafka": {"key": {"type": "string", "description": "the CloudEvent subject"},
                                   "bindingVersion": "0.5.0"}},
        }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    versions = sorted(catalogue)
    for topic, types in sorted(eventschema.topics().items()):
        names = [_message_name(t, v) for t, v in versions if t in types]
        for name in (topic, f"{topic}.dlq") if not topic.endswith(".dlq") else (topic,):
            channel = channels.setdefault(name, {
                "address": name,
                "description": SUMMARIES.get(topic, "Dead letters and delivery failures") if name == topic
                else f"Dead letters of {topic}: its records a consumer gave up on, unchanged.",
                "messages": {}})
            for message in names:
                channel["messages"][message.replace(".", "_")] = {"$ref": f"#/components/messages/{message}"}
    for name, channel in channels.items():
        operations[f"publish_{name.replace('.', '_')}"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{name}"},
            "messages": [{"$ref": f"#/channels/{name}/messages/{m}"} for m in channel["messages"]]}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "placematch events", "version": "1.0.0",
                 "description": "Every topic of placematch (Kafka; embedded mode: the in-process bus). "
                                "Generated by `python -m shared.asyncapi` from the models in "
                                "`services/*/events_schema.py`; do not edit docs/asyncapi.yaml by hand."},
        "defaultContentType": "application/cloudevents+json",
        "servers": {"kafka": {"host": "localhost:9092", "protocol": "kafka",
                              "description": "PLACEMATCH_KAFKA_BOOTSTRAP; topics take PLACEMATCH_TOPIC_PREFIX"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    return yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())


def contracts_router() -> Any:
    """`GET /asyncapi.yaml`, `GET /schemas/{type}/v{version}.json`, `GET /schemas/webhooks/{type}.json`:
    public, like /openapi.json, on every service (not part of the OpenAPI document itself)."""
    from fastapi import APIRouter, Response

    from shared.web import problem

    router = APIRouter(include_in_schema=False)

    @router.get("/asyncapi.yaml")
    async def asyncapi_yaml() -> Response:
        return Response(render(), media_type="application/yaml")

    @router.get("/schemas/webhooks/{type_}.json")
    async def webhook_schema(type_: str) -> Response:
        schema = eventschema.webhook_schema_of(type_)
        if schema is None:
            return problem(404, "Not found", f"no webhook type {type_!r}", field="type", rule="unknown_schema")
        return Response(eventschema.dumps(schema), media_type="application/schema+json")

    @router.get("/schemas/{type_}/v{version}.json")
    async def event_schema(type_: str, version: str) -> Response:
        schema = eventschema.schema_of(type_, int(version)) if version.isdigit() else None
        if schema is None:
            return problem(404, "Not found", f"no schema for event type {type_!r} data version {version}",
                           field="type", rule="unknown_schema")
        return Response(eventschema.dumps(schema), media_type="application/schema+json")

    return router
