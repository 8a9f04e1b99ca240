"""Small helpers shared by the test suites."""
from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import jwt


async def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    *,
    interval: float = 0.05,
    message: str | None = None,
) -> Any:
    """Poll `predicate` until it returns something truthy, and return that value.

    `predicate` may be a plain function or a coroutine function. An `AssertionError` raised by it
    counts as "not yet", so a predicate can be written as a block of asserts; any other exception
    propagates at once. After `timeout` seconds an `AssertionError` is raised that names what was
    awaited and carries the last assertion failure, if any.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_failure: AssertionError | None = None
    last_value: Any = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
        except AssertionError as failure:
            last_failure = failure
        else:
            if value:
                return value
            last_value = value
            last_failure = None
        if loop.time() >= deadline:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            detail = f": {last_failure}" if last_failure is not None else f" (last value: {last_value!r})"
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}") from last_failure
        await asyncio.sleep(interval)


async def read_whole_topic(bootstrap: str, topic: str, timeout: float = 90) -> list[Any]:
    """Every record of `topic` up to its current end offsets, partition by partition in offset order."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level="read_committed")
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            tps = await wait_for(consumer.assignment, timeout=timeout, message=f"partitions of {topic}")
            ends = await consumer.end_offsets(list(tps))
            records: list[Any] = []
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    records.extend(batch)
            return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


def forged_token(settings: Any, **claims: Any) -> str:
    """A correctly signed token with exactly these claims (mint_token would refuse bad ones)."""
    body = {"sub": f"{claims.get('role')}:{claims.get('tenant')}", "exp": int(time.time()) + 3600, **claims}
    return jwt.encode(body, settings.jwt_secret, algorithm="HS256")
