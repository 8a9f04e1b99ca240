"""Idempotency-Key semantics every service shares (shared/web.py), shown on the referral service."""
from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import select

from services.referral import service
from services.referral.app import create_app
from shared.db import upsert
from shared.events import format_time, now_utc
from shared.idempotency import AnswerPolicy, IdempotencyMiddleware, idempotency_keys
from shared.settings import Settings
from shared.testing import auth, service_client
from tests.e2e.support import REFERRAL
from tests.helpers import wait_for

LEASE = timedelta(seconds=2)
"""`ORPHANED_AFTER` in the tests of claims across instances (renewed every third of it)."""


async def test_a_retry_gets_the_first_answer_and_a_forged_token_gets_nothing(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    croydon = auth(settings, "borough", "croydon")
    async with service_client(create_app(settings)) as client:
        first = await client.post("/referrals", json=REFERRAL, headers={**croydon, "Idempotency-Key": "k-1"})
        again = await client.post("/referrals", json=REFERRAL, headers={**croydon, "Idempotency-Key": "k-1"})
        assert first.status_code == again.status_code == 201
        assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"

        forged = jwt.encode({"sub": "borough:croydon", "role": "borough", "tenant": "croydon"}, "not-the-secret" * 3)
        stolen = await client.post("/referrals", json=REFERRAL,
                                   headers={"Authorization": f"Bearer {forged}", "Idempotency-Key": "k-1"})
        assert stolen.status_code == 401 and "idempotent-replayed" not in stolen.headers
        assert stolen.headers["content-type"] == "application/problem+json"

        listed = await client.get("/referrals", headers=croydon)
        assert len(listed.json()["items"]) == 1


async def test_a_retry_after_try_again_later_is_run_again(tmp_path) -> None:
    """A 409 with Retry-After is not kept as the key's answer."""
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    croydon = auth(settings, "borough", "croydon")
    async with service_client(create_app(settings)) as client:
        raised = (await client.post("/referrals", json=REFERRAL, headers=croydon)).json()
        provider = auth(settings, "provider", "p-1")
        offer = {"weekly_fee_pence": 425000, "start_date": "2027-09-01"}
        pending = await client.post(f"/referrals/{raised['id']}/offers", json=offer,
                                    headers={**provider, "Idempotency-Key": "o-1"})
        assert pending.status_code == 409 and pending.headers["retry-after"] == "1"
        retried = await client.post(f"/referrals/{raised['id']}/offers", json=offer,
                                    headers={**provider, "Idempotency-Key": "o-1"})
        assert "idempotent-replayed" not in retried.headers and retried.status_code == 409


class Gate:
    """Holds the first call of `service.<name>` until `release` is set — before it runs, or with
    `after`, once it has taken effect, before the answer — and counts the calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, *, after: bool = False) -> None:
        self.entered, self.release, self.calls = asyncio.Event(), asyncio.Event(), 0
        original = getattr(service, name)

        async def gated(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            result = await original(*args, **kwargs) if after else None
            if self.calls == 1:
                self.entered.set()
                await self.release.wait()
            return result if after else await original(*args, **kwargs)

        monkeypatch.setattr(service, name, gated)


def in_progress(response: Any) -> bool:
    return (response.status_code == 409 and response.headers.get("retry-after") == "1"
            and response.json().get("field") == "Idempotency-Key"
            and "idempotent-replayed" not in response.headers)


async def test_a_request_outliving_the_lease_is_not_run_again_by_another_instance(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replicas on one database: a request still running on A after several `ORPHANED_AFTER`
    keeps its claim (A renews it), so B's retries get 409 in progress, never a second run."""
    monkeypatch.setattr(IdempotencyMiddleware, "ORPHANED_AFTER", LEASE)
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    croydon = auth(settings, "borough", "croydon")
    keyed = {**croydon, "Idempotency-Key": "slow-1"}
    gate = Gate(monkeypatch, "raise_referral")  # A's request waits before recording anything
    app_a, app_b = create_app(settings), create_app(settings)
    async with service_client(app_a) as a, service_client(app_b) as b:
        assert app_a.state.runtime.instance_id != app_b.state.runtime.instance_id
        first = asyncio.create_task(a.post("/referrals", json=REFERRAL, headers=keyed))
        await asyncio.wait_for(gate.entered.wait(), 10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        retries = 0
        while loop.time() - started < 3 * LEASE.total_seconds():
            retry = await b.post("/referrals", json=REFERRAL, headers=keyed)
            assert in_progress(retry), f"{retry.status_code} {retry.text}"
            retries += 1
            await asyncio.sleep(0.2)  # a client's pacing between retries
        assert retries >= 5 and not first.done()  # paced 0.2 s; fewer when the machine is busy

        gate.release.set()
        answered = await asyncio.wait_for(first, 10)
        assert answered.status_code == 201, answered.text
        again = await b.post("/referrals", json=REFERRAL, headers=keyed)
        assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == answered.json()["id"]

        assert gate.calls == 1, "the request ran more than once"
        listed = (await b.get("/referrals", headers=croydon)).json()["items"]
        assert [r["id"] for r in listed] == [answered.json()["id"]]


@pytest.mark.parametrize("moment", ["before-effect", "after-effect"])
async def test_a_claim_whose_owner_stopped_is_taken_over_once_the_lease_lapses(
        tmp_path, monkeypatch: pytest.MonkeyPatch, moment: str) -> None:
    """A stops in the middle of a keyed request (its claim left as a killed process leaves it, no
    longer renewed). B's retry gets 409 in progress until `ORPHANED_AFTER` has passed, then runs the
    request (nothing was recorded) or answers 409 `answer_lost` naming the effect (it was)."""
    monkeypatch.setattr(IdempotencyMiddleware, "ORPHANED_AFTER", LEASE)
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    croydon = auth(settings, "borough", "croydon")
    keyed = {**croydon, "Idempotency-Key": "gone-1"}
    gate = Gate(monkeypatch, "raise_referral", after=moment == "after-effect")
    app_a, app_b = create_app(settings), create_app(settings)
    async with service_client(app_a) as a, service_client(app_b) as b:
        db_a = app_a.state.runtime.db
        first = asyncio.create_task(a.post("/referrals", json=REFERRAL, headers=keyed))
        await asyncio.wait_for(gate.entered.wait(), 10)
        async with db_a.read() as conn:
            claim = (await conn.execute(select(idempotency_keys).where(
                idempotency_keys.c.key == "gone-1"))).one()
        assert claim.status is None and claim.owner == app_a.state.runtime.instance_id
        first.cancel()  # A's request stops and no longer renews its claim...
        await asyncio.gather(first, return_exceptions=True)
        async with db_a.transaction() as conn:  # ...which stays as it was when A was last heard from
            await upsert(conn, idempotency_keys, {**claim._asdict(), "created_at": format_time(now_utc())},
                         ["scope", "key"])
        loop = asyncio.get_running_loop()
        stopped = loop.time()

        assert in_progress(await b.post("/referrals", json=REFERRAL, headers=keyed))

        async def answered() -> Any:
            response = await b.post("/referrals", json=REFERRAL, headers=keyed)
            return None if in_progress(response) else response

        retry = await wait_for(answered, timeout=10, interval=0.1, message="B to take the claim over")
        assert loop.time() - stopped >= 0.9 * LEASE.total_seconds(), "taken over before the lease lapsed"
        listed = (await b.get("/referrals", headers=croydon)).json()["items"]
        assert len(listed) == 1, listed
        if moment == "before-effect":
            assert retry.status_code == 201 and "idempotent-replayed" not in retry.headers, retry.text
            assert retry.json()["id"] == listed[0]["id"]
        else:
            assert retry.status_code == 409 and retry.json()["rule"] == "answer_lost", retry.text
            assert retry.json()["effect"] == listed[0]["id"]


async def test_a_database_too_busy_to_answer_is_a_503_to_retry_not_a_500(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No pool connection within the pool's timeout (overload) is 503 problem+json with Retry-After;
    the key is not kept, so the retry with it runs and takes effect once."""
    import sqlalchemy.exc

    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    croydon = auth(settings, "borough", "croydon")
    keyed = {**croydon, "Idempotency-Key": "busy-1"}
    original, calls = service.raise_referral, []

    async def overloaded(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.TimeoutError("QueuePool limit of size 10 overflow 20 reached, "
                                              "connection timed out, timeout 20.00")
        return await original(*args, **kwargs)

    monkeypatch.setattr(service, "raise_referral", overloaded)
    async with service_client(create_app(settings)) as client:
        busy = await client.post("/referrals", json=REFERRAL, headers=keyed)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "2", busy.text
        assert busy.headers["content-type"].startswith("application/problem+json")
        assert busy.json()["title"] == "Service busy"
        retried = await client.post("/referrals", json=REFERRAL, headers=keyed)
        assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers, retried.text
        listed = (await client.get("/referrals", headers=croydon)).json()["items"]
        assert [r["id"] for r in listed] == [retried.json()["id"]]


async def test_an_operational_fault_that_will_not_pass_stays_a_500(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a busy, locked or unreachable database is "retry later"; a missing table is a fault."""
    import sqlalchemy.exc

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("no such table: referrals"))

    monkeypatch.setattr(service, "raise_referral", broken)
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    async with service_client(create_app(settings)) as client:
        failed = await client.post("/referrals", json=REFERRAL, headers=auth(settings, "borough", "croydon"))
        assert failed.status_code == 500 and "retry-after" not in failed.headers, failed.text
        assert failed.headers["content-type"].startswith("application/problem+json")


async def test_a_request_whose_claim_was_taken_over_does_not_take_effect(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fencing: if another instance took the key over while this run was stalled (its lease lapsed,
    e.g. no database connection to renew it), this run's appends are refused and the other's claim
    is left alone."""
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    croydon = auth(settings, "borough", "croydon")
    gate = Gate(monkeypatch, "raise_referral")
    app = create_app(settings)
    async with service_client(app) as client:
        first = asyncio.create_task(client.post("/referrals", json=REFERRAL,
                                                headers={**croydon, "Idempotency-Key": "fenced-1"}))
        await asyncio.wait_for(gate.entered.wait(), 10)
        db = app.state.runtime.db
        async with db.transaction() as conn:  # what replica B's takeover writes
            await conn.execute(idempotency_keys.update().where(idempotency_keys.c.key == "fenced-1")
                               .values(owner="replica-b", created_at=format_time(now_utc())))
        gate.release.set()
        refused = await asyncio.wait_for(first, 10)
        assert refused.status_code == 409 and refused.json()["title"] == "Request taken over", refused.text
        assert refused.headers["retry-after"] == "1"
        assert (await client.get("/referrals", headers=croydon)).json()["items"] == []
        async with db.read() as conn:
            claim = (await conn.execute(select(idempotency_keys).where(idempotency_keys.c.key == "fenced-1"))).one()
        assert claim.owner == "replica-b" and claim.status is None


async def test_a_database_too_busy_to_claim_the_key_is_a_503(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy.exc

    async def busy(*args: Any, **kwargs: Any) -> Any:
        raise sqlalchemy.exc.TimeoutError("QueuePool limit of size 10 overflow 20 reached")

    monkeypatch.setattr(IdempotencyMiddleware, "_claim", busy)
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    async with service_client(create_app(settings)) as client:
        answer = await client.post("/referrals", json=REFERRAL,
                                   headers={**auth(settings, "borough", "croydon"), "Idempotency-Key": "busy-2"})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "2", answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")


async def test_an_answer_that_could_not_be_stored_is_sent_and_the_key_recovers(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request took effect but its answer could not be kept (database gone at that moment): the
    client still gets it; a retry gets 409 in progress until the lease lapses, then `answer_lost`
    naming the effect — on a single instance too."""
    monkeypatch.setattr(IdempotencyMiddleware, "ORPHANED_AFTER", LEASE)
    original, failures = IdempotencyMiddleware._store_answer, []

    async def flaky(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise ConnectionRefusedError("database went away")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(IdempotencyMiddleware, "_store_answer", flaky)
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    keyed = {**auth(settings, "borough", "croydon"), "Idempotency-Key": "lost-1"}
    async with service_client(create_app(settings)) as client:
        first = await client.post("/referrals", json=REFERRAL, headers=keyed)
        assert first.status_code == 201, first.text
        assert in_progress(await client.post("/referrals", json=REFERRAL, headers=keyed))

        async def answered() -> Any:
            response = await client.post("/referrals", json=REFERRAL, headers=keyed)
            return None if in_progress(response) else response
        retry = await wait_for(answered, timeout=15, interval=0.2, message="the lease to lapse")
        assert retry.status_code == 409 and retry.json()["rule"] == "answer_lost", retry.text
        assert retry.json()["effect"] == first.json()["id"]


class Reversed(AnswerPolicy):
    """Seals an answer by reversing it, and forgets it for streams named in `erased`."""

    def __init__(self) -> None:
        self.erased: set[str] = set()

    async def seal(self, conn: Any, stream_id: str, body: bytes) -> bytes | None:
        return body[::-1]

    async def open(self, conn: Any, stream_id: str, sealed: bytes) -> bytes | None:
        return None if stream_id in self.erased else sealed[::-1]


async def test_the_services_answer_policy_seals_and_opens_the_stored_answer(tmp_path) -> None:
    """`ServiceRuntime(answers=...)`: the answer is kept as the policy seals it, under the stream it
    touched, and opened on a retry; once the policy cannot open it, the retry is 409 answer_erased."""
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    croydon = auth(settings, "borough", "croydon")
    app = create_app(settings)
    policy = app.state.runtime.answers = Reversed()
    async with service_client(app) as client:
        first = await client.post("/referrals", json=REFERRAL, headers={**croydon, "Idempotency-Key": "seal-1"})
        assert first.status_code == 201
        rid = first.json()["id"]
        async with app.state.runtime.db.read() as conn:
            kept = (await conn.execute(select(idempotency_keys).where(idempotency_keys.c.key == "seal-1"))).one()
        assert kept.sealed_under == rid and kept.body == first.content[::-1]
        again = await client.post("/referrals", json=REFERRAL, headers={**croydon, "Idempotency-Key": "seal-1"})
        assert again.status_code == 201 and again.content == first.content
        policy.erased.add(rid)
        erased = await client.post("/referrals", json=REFERRAL, headers={**croydon, "Idempotency-Key": "seal-1"})
        assert erased.status_code == 409 and erased.json()["rule"] == "answer_erased"
        assert erased.json()["effect"] == rid
        assert len((await client.get("/referrals", headers=croydon)).json()["items"]) == 1
