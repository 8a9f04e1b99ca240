"""Issue 15, item 2: every event the service flows record validates against its published JSON Schema.

The flows are the services' own unit tests (enrolment apply/inspect/approve/suspend, referral
raise/offer/award/close/erase, matching invite/rank/policy, placement open/start/review/fee/end/collapse,
notification requests and their webhook payloads), run in a child pytest that records every appended
envelope (`PLACEMATCH_RECORD_EVENTS`, tests/conftest.py). Each envelope's `data` is validated with
`jsonschema` against `shared.eventschema.schema_of(type, dataversion)`, each `notification-requested`'s
inner `data` against its webhook type's schema, and each carries `dataschema` naming that schema.
"""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from shared import eventschema

ROOT = Path(__file__).resolve().parents[2]
FLOWS = [
    "tests/unit/enrolment/test_service.py",
    "tests/unit/matching/test_service.py",
    "tests/unit/placement/test_api.py",
    *(f"tests/unit/referral/test_api.py::{name}" for name in (
        "test_every_command_answers_what_reading_the_referral_then_gives_byte_for_byte",
        "test_withdraw_offer_and_decline", "test_award_other_than_top_needs_justification_and_records_it",
        "test_amend_withdraw_and_close")),
]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("events") / "events.jsonl"
    env = {**os.environ, "PLACEMATCH_RECORD_EVENTS": str(out)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *FLOWS],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def _errors(schema: dict, data: object) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]


def test_every_published_event_matches_its_schema(recorded: list[dict]) -> None:
    published = [r["event"] for r in recorded if r["topic"]]
    seen = collections.Counter(e["type"] for e in published)
    failures: dict[str, list[str]] = {}
    for event in published:
        schema = eventschema.schema_of(event["type"], event["dataversion"])
        assert schema is not None, f"no schema for published {event['type']} v{event['dataversion']}"
        assert event["dataschema"] == f"/schemas/{event['type']}/v{event['dataversion']}.json"
        if problems := _errors(schema, event["data"]):
            failures.setdefault(event["type"], problems)
    assert failures == {}
    # the flows reach every topic and most types: a flow that stopped producing would show here
    assert {r["topic"].split(".", 1)[1] for r in recorded if r["topic"]} >= {
        "enrolment", "referral", "matching", "notifications", "audit", "placement"}
    assert len(seen) >= 25, sorted(seen)


def test_every_webhook_payload_matches_its_schema(recorded: list[dict]) -> None:
    requests = [r["event"]["data"] for r in recorded if r["event"]["type"] == "notification-requested"]
    types = collections.Counter(request["webhook_type"] for request in requests)
    for request in requests:
        schema = eventschema.webhook_schema_of(request["webhook_type"])
        assert schema is not None, request["webhook_type"]
        assert _errors(schema, request["data"]) == [], request["webhook_type"]
    assert len(types) >= 5, types


def test_store_only_events_name_no_schema(recorded: list[dict]) -> None:
    """Events never published (a service's own streams) carry no `dataschema` of a schema nobody serves."""
    for r in recorded:
        if r["topic"] is None:
            assert eventschema.dataschema_of(r["event"]["type"], r["event"]["dataversion"]) is None or \
                r["event"].get("dataschema")


def test_a_wrong_payload_fails_its_schema() -> None:
    """The schemas are strict enough to catch a renamed or mistyped field."""
    schema = eventschema.schema_of("offer-submitted", 1)
    assert schema is not None
    good = {"offer_id": "o", "provider_id": "p", "weekly_fee_pence": 420000, "start_date": "2027-01-04",
            "notes": None, "submitted_at": "2026-12-02T10:00:00.000000Z"}
    assert _errors(schema, good) == []
    assert _errors(schema, {**good, "weekly_fee_pence": "420000"})
    renamed = {k: v for k, v in good.items() if k != "offer_id"} | {"offerId": "o"}
    assert _errors(schema, renamed)


def test_every_event_type_version_has_one_schema() -> None:
    catalogue = eventschema.catalogue()
    for topic, types in eventschema.topics().items():
        for type_ in types:
            assert any(t == type_ for t, _ in catalogue), (topic, type_)
    for (type_, version) in catalogue:
        schema = eventschema.schema_of(type_, version)
        assert schema is not None and schema["$id"] == f"/schemas/{type_}/v{version}.json"
        jsonschema.Draft202012Validator.check_schema(schema)
    for type_ in eventschema.webhooks():
        jsonschema.Draft202012Validator.check_schema(eventschema.webhook_schema_of(type_))
