"""Two replicas of every service, exactly once, while replicas crash and roll.

Every service runs as two `placematch serve` processes on its one PostgreSQL database and the same
Kafka topics (3 partitions each); the two replicas of a consumer are members of one consumer group
and share its partitions. The client sends each write to one replica and its retries (same
Idempotency-Key) to the other, as behind a load balancer, so keys are claimed on one replica and
retried on the other. Under a steady load of referrals, offers and awards, the test

  1. checks both replicas of each consumer hold partitions of its group,
  2. SIGKILLs one replica of each service in turn (the other keeps serving) and starts it again,
  3. restarts every replica in a rolling restart (SIGTERM; one replica of each service down at a time),

then, once everything has drained, counts every accepted write's effects in the read models and at
the webhook receiver (0 lost, 0 doubled; one webhook-id per expected notification, and no others),
and runs `placematch verify` on every service's database and `placematch replay --from topics`
(matching, in the order of its journal).
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from services import SERVICES
from shared.aggregate import NewEvent
from shared.bus import KafkaBus
from shared.db import Database
from shared.events import Envelope
from shared.migrations import create_core_schema
from shared.relay import OutboxRelay
from shared.schema import events, outbox
from shared.store import EventStore
from tests.faults.cut import cut_write
from tests.faults.harness import (
    BOROUGH,
    CONSUMER_TOPICS,
    REFERRAL,
    ROOT,
    Audit,
    Client,
    Cluster,
    Ledger,
    Load,
    bearer,
)
from tests.faults.test_exactly_once_under_faults import all_referrals, diagnosed, keep_loading, settle_and_count
from tests.helpers import read_whole_topic, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.postgres]

REPLICAS = 2  # read by the `cluster` fixture
TOPICS = ["enrolment", "referral", "matching", "notifications", "audit"]


async def every_replica_consumes(cluster: Cluster) -> dict[str, list[int]]:
    """Each consumer group has one member per replica, each holding some of its partitions, all
    of them held; returns the partitions per member."""
    held: dict[str, list[int]] = {}
    for group, topics in CONSUMER_TOPICS.items():
        members = await cluster.group_members(group)
        wanted = {(cluster.topic(t), p) for t, ps in (await cluster.partitions(topics)).items() for p in ps}
        assert len(members) == REPLICAS and all(members), f"{group}: members hold {members}"
        assert set().union(*members) == wanted, f"{group}: {wanted - set().union(*members)} unassigned"
        held[group] = sorted(len(m) for m in members)
    return held


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`placematch ARGS` with the cluster's Kafka and topic prefix."""
    env = {k: v for k, v in cluster.services["matching"].env.items()
           if k not in ("PLACEMATCH_PORT", "PLACEMATCH_DATABASE_URL")} | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


async def copies_on_topics(cluster: Cluster) -> tuple[int, int]:
    """(records, distinct events) on the service topics: two relays may publish a row twice."""
    records, ids = 0, set()
    for short in TOPICS:
        for record in await read_whole_topic(cluster.bootstrap, cluster.topic(short)):
            records += 1
            ids.add(Envelope.from_kafka(record.value, dict(record.headers or ()) or None).id)
    return records, len(ids)


async def same_write_to_both_replicas(cluster: Cluster, ledger: Ledger, count: int = 8) -> Counter[str]:
    """POST one referral with one Idempotency-Key to both referral replicas at the same moment (a
    client's retry racing its first attempt through the load balancer), each retried on 409
    Retry-After until answered: both answers name one referral, one of them a replay."""
    answers: Counter[str] = Counter()

    async def one_write(http: httpx.AsyncClient) -> None:
        body = {**REFERRAL, "child_ref": f"CR-BOTH-{uuid.uuid4().hex[:10]}"}
        headers = {**bearer("borough", BOROUGH), "Idempotency-Key": f"both-{uuid.uuid4()}"}

        async def answered(url: str) -> str:
            async def post() -> str | None:
                response = await http.post(f"{url}/referrals", json=body, headers=headers)
                replayed = response.headers.get("idempotent-replayed") == "true"
                answers[f"{response.status_code}{' replayed' if replayed else ''}"] += 1
                if response.status_code == 409 and "retry-after" in response.headers:
                    return None
                assert response.status_code == 201, f"{response.status_code} {response.text[:300]}"
                return response.json()["id"]

            return await wait_for(post, timeout=60, interval=0.3, message=f"POST /referrals at {url}")

        ids = await asyncio.gather(*(answered(p.url) for p in cluster.replicas["referral"]))
        assert len(set(ids)) == 1, f"one write, two referrals: {ids}"
        ledger.referrals.append(ids[0])

    async with httpx.AsyncClient(timeout=30) as http:
        await asyncio.gather(*(one_write(http) for _ in range(count)))
    return answers


async def crash_and_roll(cluster: Cluster, load: Load, t0: float) -> None:
    """The faults, while `load` runs: one replica of each service SIGKILLed in turn (each down
    about a second; the next one goes down while the last is still starting), then a rolling
    restart, one replica of every service at a time."""
    await keep_loading(load, 3)
    held = await wait_for(lambda: every_replica_consumes(cluster), timeout=60, interval=0.5,
                          message="both replicas of every consumer to hold partitions of its group")
    print(f"\n[{time.monotonic() - t0:.0f}s] partitions held per member of each group: {held}")
    answers = await same_write_to_both_replicas(cluster, load.ledger)
    print(f"[{time.monotonic() - t0:.0f}s] one keyed write sent to both referral replicas at once, 8 times: "
          f"answers {dict(answers)}")
    assert answers["201"] == 8 and answers["201 replayed"] == 8, answers
    killed = []
    for i, name in enumerate(("notification", "matching", "referral", "enrolment")):
        replica = cluster.replicas[name][i % REPLICAS]
        await cluster.crash_and_restart(name, down_for=1.0, replica=i % REPLICAS, wait=False)
        killed.append(replica)
        print(f"[{time.monotonic() - t0:.0f}s] {replica.label} SIGKILLed, down 1.0s, starting again")
        await keep_loading(load, 1.5)
    await asyncio.gather(*(p.wait_ready() for p in killed))
    await keep_loading(load, 1.5)
    for replica in range(REPLICAS):  # one replica of every service at a time
        wave = [cluster.replicas[s][replica] for s in SERVICES]
        codes = await asyncio.gather(*(asyncio.to_thread(p.terminate) for p in wave))
        # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully
        assert set(codes) <= {0, -signal.SIGTERM}, f"exit codes after SIGTERM: {codes}"
        for p in wave:
            p.start()
        await asyncio.gather(*(p.wait_ready() for p in wave))
        print(f"[{time.monotonic() - t0:.0f}s] rolling restart: {[p.label for p in wave]} SIGTERMed and ready again")
        load.check()
    held = await wait_for(lambda: every_replica_consumes(cluster), timeout=60, interval=0.5,
                          message="the restarted replicas to hold partitions of their groups again")
    print(f"[{time.monotonic() - t0:.0f}s] after the restarts, partitions held per member: {held}")
    await keep_loading(load, 2)


async def test_two_replicas_of_each_service_crash_and_roll_under_load(
        cluster: Cluster, client: Client, audit: Audit, tmp_path: Path) -> None:
    started = time.monotonic()
    async with diagnosed(cluster):
        assert await cluster.partitions(TOPICS) == {t: [0, 1, 2] for t in TOPICS}
        load = Load(client, interval=1.0, award=True)  # 5 writes a referral, 8 processes on few cores
        load.start()
        try:
            await crash_and_roll(cluster, load, started)
        except BaseException:
            load.cancel()
            raise
        await load.stop()
        print(f"[{time.monotonic() - started:.0f}s] load stopped: every write begun was accepted")
        await settle_and_count(audit, cluster, "two replicas each: one of each SIGKILLed, then all rolled")

        hooks = audit.tallies
        expected_ids = sum(hooks[t].expected for t in ("webhooks: referral.invited", "webhooks: shortlist.updated",
                                                       "webhooks: offer.accepted / offer.not_selected"))
        assert audit.webhook_ids == expected_ids, f"{audit.webhook_ids} distinct webhook-ids, {expected_ids} expected"
        # matching and placement take no writes from this load: they react to events (placements open on awards)
        idle = [p.label for p in cluster.processes
                if p.name not in ("matching", "placement") and not client.ledger.accepted_by[p.label]]
        assert not idle, f"replicas that accepted no write: {idle} ({dict(client.ledger.accepted_by)})"

        records, events = await copies_on_topics(cluster)
        print(f"topics: {records} records of {events} events ({records - events} copies)")

        *verified, replayed = await asyncio.gather(*(
            asyncio.to_thread(cli, cluster, "verify", "--service", name, "--database-url",
                              cluster.services[name].database_url) for name in SERVICES),
            asyncio.to_thread(cli, cluster, "replay", "--data-dir", str(tmp_path), "--from", "topics",
                              "--journal", cluster.services["matching"].database_url))
        for name, run in zip(SERVICES, verified, strict=True):
            assert run.returncode == 0 and "intact" in run.stdout, f"verify {name}:\n{run.stdout}{run.stderr}"
        assert replayed.returncode == 0, f"replay:\n{replayed.stdout}{replayed.stderr}"
        assert "every decision reproduced byte for byte" in replayed.stdout, replayed.stdout
        kills = sum(p.kills for p in cluster.processes)
        print(f"kills {kills}, graceful restarts {sum(p.terminations for p in cluster.processes)}; "
              f"{client.ledger.attempts} HTTP write attempts; test took {time.monotonic() - started:.1f}s\n"
              + replayed.stdout.strip().splitlines()[-1])


def test_replicas_starting_together_migrate_one_fresh_database_once(fresh_database_url: str) -> None:
    """Replicas started together on a fresh database each run its migrations at start-up; before the
    migration lock, all but one failed (duplicate `alembic_version_*` / tables) and did not start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLACEMATCH_")} | {
        "PLACEMATCH_DATABASE_URL": fresh_database_url}
    runs = [subprocess.Popen([sys.executable, "-m", "services.cli", "migrate", "referral"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    failed = [out[-1500:] for run, out in zip(runs, outputs, strict=True) if run.returncode != 0]
    assert not failed, f"{len(failed)} of {len(runs)} concurrent migrations failed:\n" + "\n---\n".join(failed)


async def test_two_relays_on_one_outbox_publish_each_event_once_in_order(
        kafka_bootstrap: str, fresh_database_url: str, kafka_topic_prefix: str) -> None:
    """Each replica runs the outbox relay on the service's one outbox. Before the relay lock, both
    read the same rows and both published them: every event twice, a key's copies interleaved."""
    topic = f"{kafka_topic_prefix}placematch.relays"
    writer = Database(fresh_database_url)
    await create_core_schema(writer)
    store = EventStore(writer, "placematch/relays")
    for batch in range(6):  # a backlog, as a replica finds after a broker outage: 6 x 100 events on 20 streams
        async with writer.transaction() as conn:
            for i in range(100):
                stream = f"s{(batch * 100 + i) % 20}"
                await store.append(conn, stream, None, [NewEvent("thing-made", {"n": batch * 100 + i})], topic=topic)
    replicas = [(Database(fresh_database_url), KafkaBus(kafka_bootstrap, partitions=3, client_id=f"relay-{r}"))
                for r in range(2)]
    for _, bus in replicas:
        await bus.start([topic])
    relays = [OutboxRelay(db, bus, batch_size=50, poll_seconds=0.05) for db, bus in replicas]
    running = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        async def outbox_empty() -> bool:
            async with writer.read() as conn:
                return not (await conn.execute(select(func.count()).select_from(outbox))).scalar_one()

        await wait_for(outbox_empty, timeout=60, message="the relays to publish the outbox")
    finally:
        for relay in relays:
            relay.request_stop()
        await asyncio.gather(*running, return_exceptions=True)
        for db, bus in replicas:
            await bus.stop()
            await db.dispose()
    async with writer.read() as conn:
        positions = dict((await conn.execute(select(events.c.event_id, events.c.position))).all())
    await writer.dispose()
    records = await read_whole_topic(kafka_bootstrap, topic)
    ids = [Envelope.from_kafka(r.value, dict(r.headers or ()) or None).id for r in records]
    print(f"\nrelays published {[relay.published for relay in relays]}; "
          f"{len(records)} records of {len(positions)} events")
    assert len(ids) == len(set(ids)) == len(positions), f"{len(ids) - len(set(ids))} events published twice"
    for partition in {r.partition for r in records}:
        published = [positions[i] for r, i in zip(records, ids, strict=True) if r.partition == partition]
        assert published == sorted(published), f"partition {partition} out of position order"


@pytest.mark.parametrize("moment", ["before-effect", "after-effect"])
async def test_write_cut_off_on_one_replica_is_answered_by_the_other(cluster: Cluster, client: Client,
                                                                     moment: str) -> None:
    """SIGKILL referral replica 1 inside a keyed POST /referrals (as in the single-instance crash
    test: before its effect, or once it committed but before its answer was stored) and retry
    with the same key at replica 2, which is running all along: it answers 409 Retry-After while
    the claim's lease runs, then takes the claim over and runs the request (201), or answers 409
    `answer_lost` naming the committed referral. Exactly one referral either way."""
    first, other = cluster.replicas["referral"]
    http = httpx.AsyncClient(timeout=60)
    write = await cut_write(cluster, first, moment, http)
    body, headers, child_ref, committed_id = write.body, write.headers, write.child_ref, write.committed_id
    answers: Counter[str] = Counter()

    async def retried() -> str | None:
        response = await http.post(f"{other.url}/referrals", json=body, headers=headers)
        answers[f"{response.status_code} {response.json().get('rule') or ''}".strip()] += 1
        if response.status_code == 409 and "retry-after" in response.headers:
            return None
        if moment == "after-effect":
            assert response.status_code == 409 and response.json()["rule"] == "answer_lost", response.text
            return response.json()["effect"]
        assert response.status_code == 201, response.text
        return response.json()["id"]

    try:
        answered = await wait_for(retried, timeout=60, interval=1.0,
                                  message=f"replica 2 to answer the retry ({moment})")
    finally:
        await http.aclose()
        first.start()
        await first.wait_ready()
    raised = [r for r in await all_referrals(cluster) if r.get("child_ref") == child_ref]
    print(f"\n{moment}: replica 2 answered {dict(answers)}; referrals with this child_ref: {len(raised)}")
    assert [r["id"] for r in raised] == [answered]
    if committed_id is not None:
        assert answered == committed_id
    client.ledger.referrals.append(answered)  # counted by any later audit of this module
