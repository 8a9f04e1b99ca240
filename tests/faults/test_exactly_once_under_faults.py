"""Exactly once, end to end, while things break.

The four services run as their own `placematch serve` processes on the real Kafka broker and real
PostgreSQL (a fresh database each). A load generator raises a referral about every 0.6 s and every
provider offers on each, retrying like a real client: the same Idempotency-Key on every retry of a
write, on a refused connection, a 5xx, or a 409 with Retry-After, until it gets its 2xx. Meanwhile
the tests of this module, in order,

  (a) SIGKILL the Kafka broker and start it again,
  (b) SIGKILL each service process in turn and start it again,
  (c) re-produce every record already on the topics (duplicate deliveries),

and after each, once every outbox, consumer group and webhook delivery has drained, count every
accepted write's effects, cumulatively since the first test: in the referral service's views, in
matching's eligible-providers and shortlists, in the evidence pack (what matching decided, as the
referral service heard it), and at a real webhook receiver (unique webhook-ids per invitation and
per shortlist). Expected: 0 lost, 0 duplicated.

The last test crashes the referral service in the middle of a write (deterministically, by holding
a PostgreSQL lock the request needs) and checks the client's retry with the same Idempotency-Key
gets an answer and leaves exactly one referral.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import KafkaBroker
from tests.faults.cut import cut_write
from tests.faults.harness import BOROUGH, Audit, Client, Cluster, Load, bearer
from tests.helpers import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.postgres]

CONVERGE_TIMEOUT = 120.0


@contextlib.asynccontextmanager
async def diagnosed(cluster: Cluster) -> AsyncIterator[None]:
    """On failure, print what each service's database connections were doing and its log's end."""
    try:
        yield
    except BaseException:
        print("\n--- database connections at the failure ---\n" + await cluster.diagnose())
        for service in cluster.processes:
            print(f"--- {service.label} log tail ---\n{service.log_tail(1500)}")
        raise


async def keep_loading(load: Load, seconds: float) -> None:
    """Let the load run (pacing), surfacing a failed write at once."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        load.check()
        await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
    load.check()


async def settle_and_count(audit: Audit, cluster: Cluster, title: str) -> None:
    started = time.monotonic()
    try:
        await wait_for(audit.complete, timeout=CONVERGE_TIMEOUT, interval=1.0,
                       message="every accepted write to have its effects")
        await cluster.drained()
    except AssertionError:
        await audit.count()
        print(audit.report(f"{title} (NOT CONVERGED)"))
        raise
    await audit.count()  # now that nothing is in flight anywhere, a second effect would show
    print(audit.report(title) + f"\n    converged and drained in {time.monotonic() - started:.1f}s")
    assert audit.lost == 0 and audit.duplicated == 0, audit.problems()


async def test_broker_crash_under_load(kafka_broker: KafkaBroker, cluster: Cluster, client: Client,
                                       audit: Audit) -> None:
    """(a) SIGKILL the broker mid-stream, keep writing while it is down, start it again."""
    if not kafka_broker.controllable:
        reason = "the Kafka broker was not started by this test run, so it cannot be killed"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    async with diagnosed(cluster):
        load = Load(client)
        load.start()
        await keep_loading(load, 5)
        before = client.ledger.accepted
        await asyncio.to_thread(kafka_broker.kill)
        await keep_loading(load, 6)  # the broker stays down while referrals and offers keep coming
        started = time.monotonic()
        await asyncio.to_thread(kafka_broker.start)
        print(f"\nbroker down ~6s (restart took {time.monotonic() - started:.1f}s); "
              f"{client.ledger.accepted - before} writes accepted since the crash so far")
        await keep_loading(load, 5)
        await load.stop()
        await settle_and_count(audit, cluster, "(a) Kafka broker SIGKILLed and restarted")


async def test_each_service_crash_under_load(cluster: Cluster, client: Client, audit: Audit) -> None:
    """(b) SIGKILL each service process in turn while the load runs, start it again."""
    async with diagnosed(cluster):
        load = Load(client)
        load.start()
        await keep_loading(load, 3)
        for name in ("notification", "matching", "referral", "enrolment"):
            restart = await cluster.crash_and_restart(name, down_for=1.5)
            print(f"\n{name} SIGKILLed, down 1.5s, ready {restart:.1f}s after its restart")
            await keep_loading(load, 2.5)
        await load.stop()
        await settle_and_count(audit, cluster, "(b) each service SIGKILLed and restarted")


async def test_duplicate_deliveries_under_load(cluster: Cluster, client: Client, audit: Audit) -> None:
    """(c) every record already on the topics is delivered again while the load runs."""
    async with diagnosed(cluster):
        load = Load(client)
        load.start()
        await keep_loading(load, 3)
        copied = await cluster.redeliver(["enrolment", "referral", "matching", "notifications", "audit"])
        await keep_loading(load, 3)
        copied += await cluster.redeliver(["referral", "matching"])
        await load.stop()
        print(f"\nre-produced {copied} already-consumed records")
        assert copied > 0
        # `drained` waits for every consumer group to have committed past the copies: they were consumed
        await settle_and_count(audit, cluster, f"(c) {copied} duplicate deliveries injected")


@pytest.mark.parametrize("moment", ["before-effect", "after-effect"])
async def test_write_interrupted_by_a_crash_is_retried_to_exactly_one_effect(
        cluster: Cluster, client: Client, moment: str) -> None:
    """SIGKILL the referral service inside POST /referrals, after it claimed the Idempotency-Key:
    - before-effect: while the append waits for the store's lock (nothing recorded yet);
    - after-effect: once the referral is committed, before the key's answer is stored.
    Before the effect, the client's retry with the same key after the restart runs the request
    (201); after it, the retry gets 409 `answer_lost` naming the committed referral. Either way
    exactly one referral exists."""
    referral = cluster.services["referral"]
    http = httpx.AsyncClient(timeout=60)
    write = await cut_write(cluster, referral, moment, http)
    body, headers, child_ref, committed_id = write.body, write.headers, write.child_ref, write.committed_id
    if moment == "before-effect":
        assert await write.committed() is None
    referral.start()
    await referral.wait_ready()

    answers: list[str] = []

    async def retried() -> dict[str, Any] | None:
        try:
            response = await http.post(f"{referral.url}/referrals", json=body, headers=headers)
        except httpx.TransportError as error:
            answers.append(repr(error))
            return None
        answers.append(f"{response.status_code} {response.text[:200]}")
        if response.status_code == 409 and "retry-after" in response.headers:
            return None
        if moment == "after-effect":
            # the effect committed but its answer died with the process: the retry is told where
            # the effect is (never given a second referral); the client reads it from there
            assert response.status_code == 409, answers[-1]
            lost = response.json()
            assert lost["rule"] == "answer_lost" and response.headers["content-type"] == "application/problem+json"
            found = await http.get(f"{referral.url}/referrals/{lost['effect']}", headers=bearer("borough", BOROUGH))
            assert found.status_code == 200, found.text
            return found.json()
        assert response.status_code == 201, answers[-1]
        return response.json()

    try:
        view = await wait_for(retried, timeout=30, interval=1.0,
                              message=f"the retry with the same Idempotency-Key to be answered ({moment})")
    except AssertionError as stuck:
        raise AssertionError(f"{stuck}\nanswers to the retries: {sorted(set(answers))}") from None
    finally:
        await http.aclose()
    raised = [r for r in await all_referrals(cluster) if r.get("child_ref") == child_ref]
    print(f"\n{moment}: retry answered {view['id']}; referrals with this child_ref: {len(raised)}")
    assert len(raised) == 1, f"{len(raised)} referrals for one accepted write: {[r['id'] for r in raised]}"
    assert raised[0]["id"] == view["id"]
    if committed_id is not None:
        assert view["id"] == committed_id, "the retry created a second referral instead of answering with the first"


async def all_referrals(cluster: Cluster) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30) as http:
        offset = 0
        while True:
            response = await http.get(f"{cluster.url('referral')}/referrals?limit=200&offset={offset}",
                                      headers=bearer("borough", BOROUGH))
            assert response.status_code == 200, response.text
            found += response.json()["items"]
            if len(response.json()["items"]) < 200:
                return found
            offset += 200
