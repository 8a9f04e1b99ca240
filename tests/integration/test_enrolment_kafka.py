"""Enrolment on real PostgreSQL and real Kafka: an approval reaches `placematch.enrolment`."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from services.enrolment.app import create_app
from shared.events import Envelope
from shared.settings import Settings
from shared.testing import auth, service_client

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

APPLICATION: dict[str, Any] = {
    "name": "Riverside School", "urn": "100001", "kind": "independent_special_school",
    "lots": ["ASD", "SEMH"], "age_min": 5, "age_max": 19, "genders": ["female", "male"],
    "placement_types": ["day", "residential_38"], "capacity": 4,
    "location": {"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115},
    "boroughs_served": ["croydon", "lambeth"], "contact_email": "admissions@riverside.example",
}
INSPECTION = {"framework": "ofsted_report_card", "inspected_on": "2026-01-20",
              "safeguarding": "met",
              "areas": {"leadership": "strong", "achievement": "expected",
                        "inclusion": "exceptional"}}


async def read_until(consumer: AIOKafkaConsumer, wanted: str, timeout: float = 60.0) -> list[Any]:
    """Records from the topic until one of type `wanted` has been read."""
    records: list[Any] = []
    async with asyncio.timeout(timeout):
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records += batch
            if any(json.loads(r.value)["type"] == wanted for r in records):
                return records


async def test_approval_is_published_as_a_cloudevent(
        kafka_bootstrap: str, fresh_database_url: str, kafka_topic_prefix: str,
        tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=fresh_database_url,
                        topic_prefix=kafka_topic_prefix, data_dir=tmp_path,
                        relay_poll_seconds=0.05)
    commissioner = auth(settings, "commissioner", "partnership")
    topic = settings.topic("enrolment")
    assert topic == f"{kafka_topic_prefix}placematch.enrolment"

    async with service_client(create_app(settings)) as client:
        response = await client.post("/providers", json=APPLICATION)
        assert response.status_code == 201, response.text
        pid = response.json()["id"]
        response = await client.post(f"/providers/{pid}/inspections", json=INSPECTION,
                                     headers=commissioner)
        assert response.status_code == 200, response.text
        response = await client.post(f"/providers/{pid}/approve", headers=commissioner)
        assert response.status_code == 200, response.text
        listed = (await client.get("/providers?status=approved&lot=ASD",
                                   headers=commissioner)).json()
        assert [p["id"] for p in listed["items"]] == [pid]

        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            records = await read_until(consumer, "provider-approved")
        finally:
            await consumer.stop()

    ours = [r for r in records if r.key == pid.encode()]
    assert len(ours) == len(records), "every record is keyed by its provider id"
    assert len({r.partition for r in ours}) == 1, "one provider's events share a partition"
    envelopes = [Envelope.from_kafka(r.value, dict(r.headers), r.key) for r in ours]
    assert [e.type for e in envelopes] == ["provider-applied", "provider-inspected",
                                           "provider-rescored", "provider-approved"]
    assert [e.sequence for e in envelopes] == [1, 2, 3, 4]

    approval_record = ours[-1]
    wire = json.loads(approval_record.value)  # structured mode: the whole CloudEvent as JSON
    assert wire["specversion"] == "1.0"
    assert wire["type"] == "provider-approved"
    assert wire["source"] == "placematch/enrolment"
    assert wire["subject"] == pid
    assert wire["datacontenttype"] == "application/json"
    assert wire["actor"] == "commissioner:partnership"
    assert wire["id"] and wire["time"].endswith("Z")

    approval = envelopes[-1]
    assert approval.data == {
        "name": "Riverside School", "urn": "100001", "kind": "independent_special_school",
        "lots": ["ASD", "SEMH"], "age_min": 5, "age_max": 19, "genders": ["female", "male"],
        "placement_types": ["day", "residential_38"], "capacity": 4,
        "location": {"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115},
        "boroughs_served": ["croydon", "lambeth"],
        "contact_email": "admissions@riverside.example",
        "quality_score": "85.00", "reason": None,
    }
    rescored = envelopes[2].data
    assert rescored["quality_score"] == "85.00" and rescored["policy_version"] == 2
    assert rescored["inputs"]["inspection"] == INSPECTION
