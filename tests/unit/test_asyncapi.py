"""Issue 15, item 2: the AsyncAPI 3.0 document is current, valid for the AsyncAPI parser, and served
with the event schemas by every service; notification's OpenAPI document carries the webhooks."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from openapi_spec_validator import validate

from shared import asyncapi, eventschema
from shared.settings import Settings
from shared.testing import service_client

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "asyncapi.yaml"


def test_docs_asyncapi_is_current() -> None:
    assert DOC.read_text() == asyncapi.render(), "run: python -m shared.asyncapi > docs/asyncapi.yaml"


def test_document_names_every_topic_its_dlq_and_every_type() -> None:
    doc = asyncapi.document()
    assert doc["asyncapi"] == "3.0.0"
    for topic in ("enrolment", "referral", "matching", "notifications", "audit", "placement"):
        assert f"placematch.{topic}" in doc["channels"] and f"placematch.{topic}.dlq" in doc["channels"]
    names = {m["name"] for m in doc["components"]["messages"].values()}
    assert names == {t for t, _ in eventschema.catalogue()}
    dlq = doc["channels"]["placematch.notifications.dlq"]["messages"]
    assert {"delivery-failed_v1", "dead-letter-redriven_v1", "notification-requested_v1"} <= set(dlq)
    message = doc["components"]["messages"]["referral-raised.v1"]
    assert message["bindings"]["kafka"]["key"]["type"] == "string"
    assert message["contentType"] == "application/cloudevents+json"


def test_asyncapi_parser_accepts_the_document() -> None:
    if not (shutil.which("node") and shutil.which("npm")):
        if os.environ.get("CI") == "true":
            pytest.fail("node and npm are needed for deploy/asyncapi-check.sh (@asyncapi/parser)")
        pytest.skip("node/npm not installed")
    run = subprocess.run([str(ROOT / "deploy" / "asyncapi-check.sh"), str(DOC)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"errors":0' in run.stdout
    broken = DOC.parent / ".asyncapi-broken.yaml"
    try:
        doc = yaml.safe_load(DOC.read_text())
        doc["operations"]["publish_placematch_referral"]["channel"] = {"$ref": "#/channels/nowhere"}
        broken.write_text(yaml.safe_dump(doc))
        bad = subprocess.run([str(ROOT / "deploy" / "asyncapi-check.sh"), str(broken)], capture_output=True,
                             text=True, timeout=300)
        assert bad.returncode != 0  # the parser does catch a broken document
    finally:
        broken.unlink(missing_ok=True)


async def test_each_service_serves_asyncapi_and_schemas(tmp_path: Path) -> None:
    from services.matching.app import create_app as matching
    from services.notification.app import create_app as notification

    for create in (matching, notification):
        settings = Settings(data_dir=tmp_path / create.__module__, relay_poll_seconds=0.05)
        app = create(settings)
        async with service_client(app) as client:
            got = await client.get("/asyncapi.yaml")
            assert got.status_code == 200 and yaml.safe_load(got.text) == yaml.safe_load(DOC.read_text())
            schema = await client.get("/schemas/referral-raised/v1.json")
            assert schema.status_code == 200 and schema.json() == eventschema.schema_of("referral-raised", 1)
            hook = await client.get("/schemas/webhooks/offer.accepted.json")
            assert hook.status_code == 200 and "weekly_fee_pence" in hook.json()["required"]
            missing = await client.get("/schemas/referral-raised/v9.json")
            assert missing.status_code == 404 and missing.json()["rule"] == "unknown_schema"
            assert missing.headers["content-type"].startswith("application/problem+json")
            if create is notification:
                doc = (await client.get("/openapi.json")).json()
                assert set(doc["webhooks"]) == set(eventschema.webhooks())
                validate(doc)
