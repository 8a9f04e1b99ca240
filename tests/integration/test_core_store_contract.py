"""The EventStore contract (tests/unit/core/test_store_contract.py) held by PostgreSQL: the same
tests, on a fresh PostgreSQL database each."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.store import EventStore
from tests.unit.core.test_store_contract import *  # noqa: F403 - the contract's tests, collected here too
from tests.unit.core.test_store_contract import open_store

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture
async def store(fresh_database_url: str) -> AsyncIterator[EventStore]:  # noqa: F811 - PostgreSQL, not SQLite
    async for opened in open_store(fresh_database_url):
        yield opened
