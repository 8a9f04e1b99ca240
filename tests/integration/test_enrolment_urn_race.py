"""Enrolment on real PostgreSQL and Kafka: simultaneous applications with one Ofsted URN enrol
exactly one provider (the read model's partial unique index), and only its event is published."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from services.enrolment.app import create_app
from services.enrolment.projections import ACTIVE_URN_INDEX
from shared.settings import Settings
from shared.testing import service_client
from tests.helpers import read_whole_topic, wait_for
from tests.unit.enrolment.test_service import race_applications

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def test_simultaneous_applications_with_one_urn_enrol_one_provider(
        kafka_bootstrap: str, fresh_database_url: str, kafka_topic_prefix: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=fresh_database_url,
                        topic_prefix=kafka_topic_prefix, data_dir=tmp_path,
                        relay_poll_seconds=0.05)
    app = create_app(settings)
    async with service_client(app) as client:
        runtime = app.state.runtime
        async with runtime.db.read() as conn:
            definition = (await conn.execute(text(
                "SELECT indexdef FROM pg_indexes WHERE indexname = :name"),
                {"name": ACTIVE_URN_INDEX})).scalar_one()
        assert "UNIQUE" in definition and "<> 'rejected'" in definition, definition

        winner = await race_applications(client, app, monkeypatch, racers=8)

        async def published() -> list[dict]:
            records = await read_whole_topic(kafka_bootstrap, settings.topic("enrolment"))
            return [json.loads(r.value) for r in records]

        events = await wait_for(published, timeout=60, message="the winner's event on Kafka")
        assert [(e["type"], e["subject"]) for e in events] == [("provider-applied", winner)]
