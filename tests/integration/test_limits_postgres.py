"""Issue 12 (hardening): on PostgreSQL the rate limits hold across replicas — two enrolment instances
on one database count a client's requests in the same `rate_limits` rows."""
from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from services.enrolment.app import create_app
from shared.limits import DatabaseStorage
from shared.schema import rate_limits
from shared.settings import Settings
from tests.unit.enrolment.test_api import application

pytestmark = [pytest.mark.postgres]


async def test_two_instances_on_one_database_share_the_limit(fresh_database_url: str, tmp_path: Path) -> None:
    def settings(name: str) -> Settings:
        return Settings(database_url=fresh_database_url, data_dir=tmp_path / name, relay_poll_seconds=0.05,
                        rate_limit_open="4/minute")

    first, second = create_app(settings("a")), create_app(settings("b"))
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for app in (first, second):  # one after the other: each migrates the database at start-up
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app, client=("203.0.113.50", 40000))
            clients.append(await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://testserver")))
        assert all(isinstance(app.state.rate_limiter.storage, DatabaseStorage) for app in (first, second))

        statuses = [(await clients[n % 2].post("/providers", json=application(urn=str(500000 + n)))).status_code
                    for n in range(6)]
        assert statuses == [201, 201, 201, 201, 429, 429]  # each instance alone would have allowed 4
        refused = await clients[1].post("/providers", json=application(urn="500010"))
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60

        async with first.state.runtime.db.read() as conn:
            counts = (await conn.execute(select(rate_limits.c.key, rate_limits.c.count))).all()
        assert len(counts) == 1 and "203.0.113.50" in counts[0].key and counts[0].count == 7

        other = httpx.ASGITransport(app=second, client=("198.51.100.60", 40000))
        async with httpx.AsyncClient(transport=other, base_url="http://testserver") as client:
            assert (await client.post("/providers", json=application(urn="500020"))).status_code == 201
