"""The demo's HTTP client of the four services, and the webhook receiver it plays portals with."""
from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

HTTP_CONCURRENCY = 8
"""Requests in flight at once: enough to keep four SQLite-backed services busy on two cores."""
RATE_LIMIT_PATIENCE_SECONDS = 90
"""A 429 whose Retry-After is at most this long is waited out and the request sent again."""

EVENT_WAIT_SECONDS = 120.0
"""Longest wait for an asynchronous effect (an invitation list, a ranked shortlist). Generous:
`placematch up` runs all four services in one process, which a busy machine slows down a lot."""


class DemoError(RuntimeError):
    """The demo could not continue: a service answered something it should not have."""


# --------------------------------------------------------------------------- HTTP


class Unexpected(DemoError):
    def __init__(self, method: str, url: str, response: httpx.Response) -> None:
        self.status = response.status_code
        self.body = response.text[:600]
        super().__init__(f"{method} {url} -> {response.status_code}: {self.body}")


@dataclass
class Api:
    client: httpx.AsyncClient
    base_url: Callable[[str], str]
    seed: int
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(HTTP_CONCURRENCY))
    requests: int = 0
    tally: Counter[str] = field(default_factory=Counter)

    async def send(self, method: str, service: str, path: str, token: str | None, body: Any = None,
                   key: str | None = None, params: dict[str, Any] | None = None) -> httpx.Response:
        """One request; transport errors and 5xx are retried with the same Idempotency-Key."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        if key is not None:
            headers["idempotency-key"] = f"demo-{self.seed}-{key}"
        url = f"{self.base_url(service)}{path}"
        for attempt in range(5):
            try:
                async with self.gate:
                    self.requests += 1
                    response = await self.client.request(method, url, json=body, headers=headers, params=params)
            except httpx.TransportError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * 2 ** attempt)
                continue
            shape = "/".join("{id}" if len(part) == 36 else part for part in path.split("/"))
            self.tally[f"{method} {service}{shape} {response.status_code}"] += 1
            if response.status_code >= 500 and attempt < 4:
                await asyncio.sleep(0.2 * 2 ** attempt)
                continue
            wait = _retry_after(response) if response.status_code == 429 else None
            if wait is not None and wait <= RATE_LIMIT_PATIENCE_SECONDS and attempt < 4:
                await asyncio.sleep(wait)  # a rate limit (e.g. a second demo within a minute): wait it out
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def call(self, method: str, service: str, path: str, token: str | None, body: Any = None, *,
                   key: str | None = None, ok: Iterable[int] = (200, 201, 202, 204),
                   params: dict[str, Any] | None = None) -> Any:
        response = await self.send(method, service, path, token, body, key, params)
        if response.status_code not in tuple(ok):
            raise Unexpected(method, f"{service}{path}", response)
        return response.json() if response.content else None

    async def call_when_ready(self, method: str, service: str, path: str, token: str, body: Any = None, *,
                              key: str, retry_rules: Iterable[str], first_delay: float = 0.2,
                              max_delay: float = 1.0) -> Any:
        """A write that may be answered 409 + Retry-After while an event is still on its way.

        Each attempt carries its own Idempotency-Key: a 409 is a final answer for a key.
        """
        retry_rules = set(retry_rules) | {"concurrency"}
        started = time.monotonic()
        delay = first_delay
        attempt = 0
        while True:
            response = await self.send(method, service, path, token, body, f"{key}:{attempt}")
            if response.status_code < 400:
                return response.json() if response.content else None
            rule = problem_rule(response)
            waiting = response.status_code == 409 and (
                rule in retry_rules or "retry-after" in response.headers
                or "Concurrent" in (_problem(response).get("title") or ""))
            if not waiting or time.monotonic() - started > EVENT_WAIT_SECONDS:
                raise Unexpected(method, f"{service}{path}", response)
            retry_after = float(response.headers.get("retry-after") or delay)
            await asyncio.sleep(min(retry_after, delay))
            delay = min(max_delay, delay * 1.5)
            attempt += 1


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def problem_rule(response: httpx.Response) -> str | None:
    rule = _problem(response).get("rule")
    return str(rule) if rule else None


async def poll_until(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = EVENT_WAIT_SECONDS) -> T:
    started = time.monotonic()
    delay = 0.15
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() - started > timeout:
            raise DemoError(f"gave up after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(1.0, delay * 1.5)


# --------------------------------------------------------------------------- webhook portals


class WebhookReceiver:
    """A few provider portals and borough systems, in one tiny HTTP server that checks signatures."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.received: Counter[str] = Counter()
        self.verified = 0
        self.rejected = 0
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self.base = ""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        return self.base

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            await asyncio.sleep(0.05)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                self._record(path, headers, body)
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError,
                asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> None:
        from standardwebhooks import Webhook

        try:
            self.received[str(json.loads(body).get("type"))] += 1
        except ValueError:
            self.received["unparseable"] += 1
        secret = self.secrets.get(path.rsplit("/", 1)[-1])
        try:
            if secret is None:
                raise ValueError("unknown endpoint")
            Webhook(secret).verify(body, headers)
            self.verified += 1
        except Exception:
            self.rejected += 1


# --------------------------------------------------------------------------- the demo
