"""Dead letters on Kafka: a consumer's `.dlq` record is listed with its failure, re-driven once
through `placematch dlq redrive` to its consumer, and a second redrive has no effect. The
consumer's lag on Kafka (committed vs end offsets) is read for /metrics."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from services.cli import app as cli
from shared import dlq
from shared.bus import Message
from shared.events import Envelope
from shared.metrics import consumer_lag
from shared.relay import STRUCTURED
from shared.service import ConsumerSpec, ServiceRuntime
from shared.settings import Settings
from tests.helpers import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


class Flaky:
    def __init__(self) -> None:
        self.broken = True
        self.effects: list[str] = []

    async def __call__(self, conn: Any, event: Envelope) -> None:
        if self.broken:
            raise RuntimeError(f"cannot place {event.type} yet")
        self.effects.append(event.id)


async def caught_up(runtime: ServiceRuntime) -> list[tuple[str, int, int]]:
    """(topic, partition, lag) of the runtime's consumer once every lag is 0; [] before."""
    lags = await consumer_lag(runtime.consumers[0])
    return lags if lags and all(lag == 0 for _t, _p, lag in lags) else []


def test_a_dead_letter_on_kafka_is_redriven_once(kafka_bootstrap: str, fresh_database_url: str,
                                                 kafka_topic_prefix: str, tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=fresh_database_url,
                        topic_prefix=kafka_topic_prefix, data_dir=tmp_path, relay_poll_seconds=0.05,
                        consumer_max_attempts=2, consumer_retry_base_seconds=0.01)
    handler = Flaky()
    event = Envelope(type="referral-raised", subject="r-1", source="placematch/referral", data={"borough": "croydon"})

    async def run(work: Any) -> Any:
        runtime = ServiceRuntime("matching", settings, consumes=[ConsumerSpec(["referral"], handler)])
        await runtime.start()
        try:
            await runtime.consumers_ready(timeout=60)
            return await work(runtime)
        finally:
            await runtime.stop()

    async def fail_one(runtime: ServiceRuntime) -> list[dlq.DeadLetter]:
        await runtime.bus.publish([Message(runtime.topic("referral"), event.subject, event.to_json(), STRUCTURED)])
        await wait_for(lambda: runtime.consumers[0].dead_lettered == 1, timeout=60, message="the event dead-lettered")

        lags = await wait_for(lambda: caught_up(runtime), timeout=60, message="committed offsets at the end")
        assert {t for t, _p, _l in lags} == {runtime.topic("referral")}
        assert len(lags) == settings.kafka_partitions  # one consumer: every partition is its own
        return await dlq.read(runtime.bus, [runtime.topic("referral") + ".dlq"])

    [letter] = asyncio.run(run(fail_one))
    assert (letter.event_id, letter.consumer, letter.attempts) == (event.id, f"{kafka_topic_prefix}matching-main", 2)
    assert letter.reason == "RuntimeError: cannot place referral-raised yet" and letter.topic.endswith(".dlq")

    env = {"PLACEMATCH_KAFKA_BOOTSTRAP": kafka_bootstrap, "PLACEMATCH_TOPIC_PREFIX": kafka_topic_prefix,
           "PLACEMATCH_DATABASE_URL": fresh_database_url}
    runner = CliRunner()
    listed = runner.invoke(cli, ["dlq", "list", "--topic", "referral", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    [entry] = [json.loads(line) for line in listed.output.splitlines()]
    assert entry["id"] == letter.id and entry["event_id"] == event.id and entry["redriven_at"] is None

    first = runner.invoke(cli, ["dlq", "redrive", letter.id], env=env)
    assert first.exit_code == 0 and "1 re-driven, 0 left" in first.output, first.output
    second = runner.invoke(cli, ["dlq", "redrive", "--all", "--topic", "referral"], env=env)
    assert "0 re-driven, 0 left" in second.output, second.output
    third = runner.invoke(cli, ["dlq", "redrive", event.id], env=env)
    assert "already re-driven" in third.output, third.output

    handler.broken = False

    async def consume_again(runtime: ServiceRuntime) -> None:
        await wait_for(lambda: handler.effects, timeout=60, message="the re-driven event handled")
        await wait_for(lambda: caught_up(runtime), timeout=60, message="committed offsets at the end")
        assert runtime.consumers[0].handled == 1

    asyncio.run(run(consume_again))
    assert handler.effects == [event.id]
    after = runner.invoke(cli, ["dlq", "list", "--json"], env=env)
    entries = [json.loads(line) for line in after.output.splitlines()]
    assert [e["redriven_at"] is not None for e in entries if e["id"] == letter.id] == [True]
