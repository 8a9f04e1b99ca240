"""Dead letters on the local bus (the embedded run): listed with what failed, when, why and how
often; re-driven once to their consumer, so re-driving twice has no second effect."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from services.cli import app as cli
from shared import dlq
from shared.bus import Message
from shared.events import Envelope
from shared.relay import STRUCTURED
from shared.service import ConsumerSpec, ServiceRuntime
from shared.settings import Settings
from tests.helpers import wait_for
from tests.ops_stack import sample


class Flaky:
    """A handler that fails while `broken`, and records each event it took effect for."""

    def __init__(self) -> None:
        self.broken = True
        self.effects: list[str] = []

    async def __call__(self, conn: Any, event: Envelope) -> None:
        if self.broken:
            raise RuntimeError(f"cannot place {event.type} yet")
        self.effects.append(event.id)


def settings_for(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, relay_poll_seconds=0.05, consumer_max_attempts=2,
                    consumer_retry_base_seconds=0.01)


@asynccontextmanager
async def running(data_dir: Path, handler: Flaky) -> AsyncIterator[ServiceRuntime]:
    runtime = ServiceRuntime("matching", settings_for(data_dir), consumes=[ConsumerSpec(["referral"], handler)])
    await runtime.start()
    try:
        await runtime.consumers_ready()
        yield runtime
    finally:
        await runtime.stop()


def raised() -> Envelope:
    return Envelope(type="referral-raised", subject="r-1", source="placematch/referral", data={"borough": "croydon"})


async def publish(runtime: ServiceRuntime, envelope: Envelope) -> None:
    await runtime.bus.publish([Message(runtime.topic("referral"), envelope.subject, envelope.to_json(), STRUCTURED)])


async def test_a_dead_letter_is_listed_and_redriven_once(tmp_path: Path) -> None:
    handler = Flaky()
    event = raised()
    async with running(tmp_path, handler) as runtime:
        consumer = runtime.consumers[0]
        before = sample((await _metrics(runtime)), "placematch_dead_lettered_total", consumer="matching-main",
                        topic="placematch.referral") or 0
        await publish(runtime, event)
        await wait_for(lambda: consumer.dead_lettered == 1, message="the event dead-lettered")
        assert sample(await _metrics(runtime), "placematch_dead_lettered_total", consumer="matching-main",
                      topic="placematch.referral") == before + 1

        topics = await dlq.dlq_topics(runtime.bus, runtime.settings)
        assert topics == ["placematch.referral.dlq"]
        [letter] = await dlq.read(runtime.bus, topics)
        assert (letter.event_id, letter.event_type, letter.consumer) == (event.id, "referral-raised", "matching-main")
        assert letter.attempts == 2 and letter.reason == "RuntimeError: cannot place referral-raised yet"
        assert letter.failed_at.endswith("Z") and letter.redrivable and letter.redriven == []
        assert dlq.find([letter], event.id) == [letter] == dlq.find([letter], letter.id)

        handler.broken = False
        [first] = await dlq.redrive(runtime.bus, [letter])
        assert first.done
        await wait_for(lambda: handler.effects == [event.id], message="the re-driven event handled")

        # a second redrive of the same dead letter publishes nothing: it was re-driven already
        [again] = await dlq.redrive(runtime.bus, await dlq.read(runtime.bus, topics))
        assert not again.done and again.why.startswith("already re-driven")
        # and were a copy to come again anyway, the consumer's own de-duplication stops it
        duplicates = consumer.duplicates
        await publish(runtime, event)
        await wait_for(lambda: consumer.duplicates == duplicates + 1, message="the copy seen as a duplicate")
        assert handler.effects == [event.id]
        [listed] = await dlq.read(runtime.bus, topics)
        assert listed.redriven and listed.summary()["redriven_at"]


async def _metrics(runtime: ServiceRuntime) -> str:
    from prometheus_client import generate_latest

    from shared.metrics import registry_for

    return generate_latest(registry_for(runtime.name)).decode()


def test_the_dlq_commands_list_show_and_redrive_once(tmp_path: Path) -> None:
    handler = Flaky()
    event = raised()

    async def fail_one() -> None:
        async with running(tmp_path, handler) as runtime:
            await publish(runtime, event)
            await wait_for(lambda: runtime.consumers[0].dead_lettered == 1, message="the event dead-lettered")

    asyncio.run(fail_one())
    runner = CliRunner()
    listed = runner.invoke(cli, ["dlq", "list", "--data-dir", str(tmp_path), "--json"])
    assert listed.exit_code == 0, listed.output
    [entry] = [json.loads(line) for line in listed.output.splitlines()]
    assert entry["event_id"] == event.id and entry["consumer"] == "matching-main" and entry["attempts"] == 2
    assert entry["topic"] == "placematch.referral" and entry["redriven_at"] is None
    assert entry["origin"].startswith("placematch.referral:0:")
    assert "cannot place referral-raised yet" in entry["reason"]

    shown = runner.invoke(cli, ["dlq", "show", entry["id"], "--data-dir", str(tmp_path)])
    assert shown.exit_code == 0 and "Traceback" in shown.output and event.id in shown.output

    other = runner.invoke(cli, ["dlq", "list", "--topic", "enrolment", "--data-dir", str(tmp_path), "--json"])
    assert other.exit_code == 0 and other.output == ""
    missing = runner.invoke(cli, ["dlq", "redrive", "no-such-id", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 1 and "no dead letter" in missing.output
    assert runner.invoke(cli, ["dlq", "redrive", "--data-dir", str(tmp_path)]).exit_code == 2

    first = runner.invoke(cli, ["dlq", "redrive", event.id, "--data-dir", str(tmp_path)])
    assert first.exit_code == 0 and "1 re-driven, 0 left" in first.output, first.output
    second = runner.invoke(cli, ["dlq", "redrive", "--all", "--data-dir", str(tmp_path)])
    assert second.exit_code == 0 and "0 re-driven, 0 left" in second.output, second.output
    third = runner.invoke(cli, ["dlq", "redrive", event.id, "--data-dir", str(tmp_path)])
    assert "already re-driven" in third.output and "0 re-driven, 1 left" in third.output

    handler.broken = False

    async def consume_again() -> None:
        async with running(tmp_path, handler) as runtime:
            await wait_for(lambda: handler.effects, message="the re-driven event handled")
            assert runtime.consumers[0].dead_lettered == 0

    asyncio.run(consume_again())
    assert handler.effects == [event.id]
    after = runner.invoke(cli, ["dlq", "list", "--data-dir", str(tmp_path), "--json"])
    assert json.loads(after.output.splitlines()[0])["redriven_at"]


def test_a_delivery_failure_is_listed_but_not_redriven(tmp_path: Path) -> None:
    failed = Envelope(type="delivery-failed", subject="d-1", source="placematch/notification",
                      data={"delivery_id": "d-1", "attempts": 8, "reason": "attempts_exhausted"})

    async def publish_failure() -> list[dlq.Redrive]:
        async with running(tmp_path, Flaky()) as runtime:
            topic = runtime.topic("notifications.dlq")
            await runtime.bus.publish([Message(topic, "d-1", failed.to_json(), STRUCTURED)])
            letters = await dlq.read(runtime.bus, await dlq.dlq_topics(runtime.bus, runtime.settings))
            assert [(x.event_type, x.reason, x.attempts, x.redrivable) for x in letters] == [
                ("delivery-failed", "attempts_exhausted", 8, False)]
            return await dlq.redrive(runtime.bus, letters)

    [result] = asyncio.run(publish_failure())
    assert not result.done and "/deliveries/{id}/retry" in result.why
