"""The infrastructure fixtures give a working Kafka broker and PostgreSQL."""
from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.helpers import wait_for


async def test_kafka_round_trip(kafka_bootstrap: str, kafka_topic_prefix: str) -> None:
    topic = f"{kafka_topic_prefix}infra"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b'{"hello": "kafka"}', key=b"aggregate-1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{kafka_topic_prefix}group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=30)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert (message.key, message.value) == (b"aggregate-1", b'{"hello": "kafka"}')


async def test_database_answers(database_url: str) -> None:
    assert database_url.startswith("postgresql+asyncpg://")
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_fresh_database_is_private_and_empty(database_url: str, fresh_database_url: str) -> None:
    assert fresh_database_url != database_url
    engine = create_async_engine(fresh_database_url)
    try:
        async with engine.begin() as connection:
            tables = await connection.execute(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            )
            assert tables.scalar_one() == 0
            await connection.execute(text("CREATE TABLE probe (id int)"))
    finally:
        await engine.dispose()


async def test_wait_for_polls_until_true() -> None:
    calls = 0

    def ready() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    assert await wait_for(ready, timeout=2)

    async def never() -> bool:
        return False

    with pytest.raises(AssertionError, match="timed out after 0.2s waiting for"):
        await wait_for(never, timeout=0.2)
