"""A keyed POST /referrals cut off by a SIGKILL of the process serving it, after it claimed its
Idempotency-Key: before its effect (held at the store's append lock, nothing recorded) or after it
(the referral committed, its answer not yet stored). Both fault suites retry such a write."""
from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import httpx

from shared.store import APPEND_LOCK_KEY
from tests.faults.harness import BOROUGH, REFERRAL, Cluster, ServiceProcess, asyncpg_dsn, bearer
from tests.helpers import wait_for

Moment = Literal["before-effect", "after-effect"]


@dataclass
class CutWrite:
    cluster: Cluster
    child_ref: str
    correlation: str
    body: dict[str, Any]
    headers: dict[str, str]
    committed_id: str | None = None
    """The referral the first attempt committed (after-effect), else None."""

    async def committed(self) -> str | None:
        return await self.cluster.scalar("referral", "SELECT stream_id FROM events WHERE type = 'referral-raised' "
                                                     "AND body LIKE '%' || $1 || '%'", self.correlation)


async def cut_write(cluster: Cluster, process: ServiceProcess, moment: Moment, http: httpx.AsyncClient) -> CutWrite:
    """Send the write to `process`, hold it at `moment`, SIGKILL `process`; the attempt must see no answer."""
    key, correlation = f"cut-{uuid.uuid4()}", str(uuid.uuid4())
    child_ref = f"CR-CUT-{uuid.uuid4().hex[:10]}"
    write = CutWrite(cluster, child_ref, correlation, {**REFERRAL, "child_ref": child_ref},
                     {**bearer("borough", BOROUGH), "Idempotency-Key": key, "X-Correlation-ID": correlation})

    async def claimed() -> bool:
        return bool(await cluster.scalar(
            "referral", "SELECT count(*) FROM idempotency_keys WHERE key = $1 AND status IS NULL", key))

    async def waiting_for_append_lock() -> bool:
        return bool(await cluster.scalar("referral", """
            SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""))

    blocker = await asyncpg.connect(asyncpg_dsn(process.database_url))
    try:
        await blocker.execute("SELECT pg_advisory_lock($1)", APPEND_LOCK_KEY)  # appends now wait
        request = asyncio.create_task(http.post(f"{process.url}/referrals", json=write.body, headers=write.headers))
        await wait_for(claimed, timeout=20, message="the Idempotency-Key to be claimed")
        await wait_for(waiting_for_append_lock, timeout=20, message="POST /referrals to wait on the append lock")
        if moment == "after-effect":
            holding = blocker.transaction()
            await holding.start()
            # a share lock holds back the answer's UPDATE, not the request's own fence (also a share lock)
            await blocker.execute("SELECT 1 FROM idempotency_keys WHERE key = $1 FOR SHARE", key)
            await blocker.execute("SELECT pg_advisory_unlock($1)", APPEND_LOCK_KEY)  # the append goes ahead
            write.committed_id = await wait_for(write.committed, timeout=20, message="the referral to be committed")
        process.kill()
        first = (await asyncio.gather(request, return_exceptions=True))[0]
        assert isinstance(first, httpx.TransportError), f"the first attempt was answered: {first!r}"
    finally:
        await blocker.close()  # releases whatever it still holds
    return write
