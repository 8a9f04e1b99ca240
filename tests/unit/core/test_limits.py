"""Issue 12 (hardening): abuse limits on every service.

- A request body over `max_body_bytes` is answered 413 problem+json before the rest is read: with a
  Content-Length over the cap nothing is read at all; a chunked body is refused once the count passes
  the cap (real uvicorn server, raw socket; what the app pulled is recorded under the whole stack).
- A flood of anonymous POST /providers is answered 429 with Retry-After after the open limit, while
  another client IP, or a token holder, is still served; X-Forwarded-For counts only from a trusted
  proxy; expensive endpoints are limited per token subject.
- The database storage: two replicas on one database share a limit (SQLite here; PostgreSQL in
  tests/integration/test_limits_postgres.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import select
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from limits import parse

from services.enrolment.app import create_app
from shared.db import Database, sqlite_url
from shared.limits import RULES, DatabaseStorage, RateLimiter, client_ip, parse_networks
from shared.migrations import create_core_schema
from shared.schema import rate_limits
from shared.settings import Settings
from shared.testing import auth
from tests.helpers import wait_for
from tests.unit.enrolment.test_api import application

PROBLEM = "application/problem+json"
FIFTY_MB = 50 * 1024 * 1024
CHUNK = 64 * 1024


class Recorder:
    """Outermost ASGI layer: counts the body bytes the app (the whole stack) pulled from the server."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.pieces: list[int] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                self.pieces.append(len(message.get("body", b"")))
            return message

        await self.app(scope, counted, send)

    @property
    def received(self) -> int:
        return sum(self.pieces)


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[int]:
    """The app under a real uvicorn on a free loopback port (lifespan on)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           log_config=None))
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), timeout=30, message="uvicorn started")
        assert not task.done(), "uvicorn did not start"
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def _head(port: int, extra: str, *, keyed: bool = True) -> bytes:
    key = f"idempotency-key: {uuid.uuid4()}\r\n" if keyed else ""
    return (f"POST /providers HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
            f"{key}{extra}\r\n").encode()


def _send_until_answered(port: int, head: bytes, chunks: int, frame: Any) -> tuple[int, bytes]:
    """Send `head`, then up to `chunks` pieces until the server answers; (body bytes sent, answer)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for _ in range(chunks):
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(frame(b"x" * CHUNK))
            except OSError:  # the server answered and closed: the rest is not read
                break
            sent += CHUNK
        answer = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
    return sent, answer


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _parse(answer: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    assert answer.startswith(b"HTTP/1.1 "), f"no HTTP answer: {answer[:200]!r}"
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, orjson.loads(body)


async def test_a_declared_50_mb_body_is_refused_before_it_is_read(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    app = Recorder(create_app(settings))
    async with served(app) as port:
        head = _head(port, f"content-length: {FIFTY_MB}\r\n")
        sent, answer = await asyncio.to_thread(_send_until_answered, port, head, FIFTY_MB // CHUNK, lambda b: b)
    assert sent < FIFTY_MB, "the server let the client send the whole body"
    status, headers, body = _parse(answer)
    assert status == 413, answer[:300]
    assert headers["content-type"] == PROBLEM and headers["connection"] == "close"
    assert body["rule"] == "max_body_bytes" and body["field"] == "body" and body["status"] == 413
    assert app.received == 0  # not one byte of the body was read


@pytest.mark.parametrize("keyed", [True, False], ids=["with-idempotency-key", "without"])
async def test_a_chunked_body_is_refused_once_it_passes_the_cap(tmp_path: Path, keyed: bool) -> None:
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    app = Recorder(create_app(settings))

    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    async with served(app) as port:
        head = _head(port, "transfer-encoding: chunked\r\n", keyed=keyed)
        sent, answer = await asyncio.to_thread(_send_until_answered, port, head, FIFTY_MB // CHUNK, chunk)
    assert sent < FIFTY_MB, f"the server let the client send the whole body; the app read {app.received} bytes"
    status, headers, body = _parse(answer)
    assert status == 413, answer[:300]
    assert headers["content-type"] == PROBLEM and body["rule"] == "max_body_bytes"
    # the Idempotency-Key middleware (which reads whole bodies) sits behind the cap, and the route's own
    # read is stopped too: the stack pulled no piece past the first that took the count over 1 MiB
    assert sum(app.pieces[:-1]) <= settings.max_body_bytes < app.received < 2 * settings.max_body_bytes


async def test_a_body_within_the_cap_is_served(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05, max_body_bytes=2000)
    async with clients(create_app(settings), "198.51.100.7") as (client,):
        assert (await client.post("/providers", json=application())).status_code == 201
        padded = application(urn="100002", name="R" * 3000)
        refused = await client.post("/providers", json=padded)
        assert refused.status_code == 413 and refused.headers["content-type"] == PROBLEM


@contextlib.asynccontextmanager
async def clients(app: FastAPI, *ips: str) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    """One started app, one httpx client per client IP address."""
    async with app.router.lifespan_context(app), contextlib.AsyncExitStack() as stack:
        made = []
        for ip in ips:
            transport = httpx.ASGITransport(app=app, client=(ip, 40000))
            made.append(await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://testserver")))
        yield tuple(made)


async def test_a_flood_of_anonymous_applications_gets_429_while_others_are_served(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05, rate_limit_open="5/minute")
    async with clients(create_app(settings), "203.0.113.9", "198.51.100.20") as (flood, other):
        answers = [await flood.post("/providers", json=application(urn=str(200000 + n))) for n in range(30)]
        assert [a.status_code for a in answers] == [201] * 5 + [429] * 25
        refused = answers[-1]
        assert refused.headers["content-type"] == PROBLEM
        assert refused.json()["rule"] == "rate_limit" and refused.json()["status"] == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60

        assert (await other.post("/providers", json=application(urn="300000"))).status_code == 201
        token = auth(settings, "provider", "applicant-1")
        assert (await flood.post("/providers", json=application(urn="300001"), headers=token)).status_code == 201

        listed = await other.get("/providers", headers=auth(settings, "commissioner", "region"))
        assert listed.json()["total"] == 7  # the refused ones changed nothing


async def test_the_default_open_limit_stops_a_flood(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    allowed = parse(settings.rate_limit_open.split(";")[0]).amount
    async with clients(create_app(settings), "203.0.113.10") as (flood,):
        statuses = [(await flood.post("/providers", json={})).status_code for _ in range(allowed + 3)]
    assert statuses == [422] * allowed + [429] * 3  # counted before the body is even looked at


async def test_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    base = dict(data_dir=tmp_path, relay_poll_seconds=0.05, rate_limit_open="2/minute")

    async def statuses(settings: Settings, forwarded: list[str]) -> list[int]:
        async with clients(create_app(settings), "10.0.0.2") as (proxy,):
            return [(await proxy.post("/providers", json={}, headers={"x-forwarded-for": f})).status_code
                    for f in forwarded]

    spoofed = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert await statuses(Settings(**base), spoofed) == [422, 422, 429]  # one client: the peer
    trusting = Settings(**{**base, "data_dir": tmp_path / "b"}, trusted_proxies="10.0.0.0/24")
    assert await statuses(trusting, spoofed) == [422, 422, 422]  # three clients behind the proxy


def test_client_ip_takes_the_rightmost_untrusted_hop() -> None:
    trusted = parse_networks("10.0.0.0/8, 2001:db8::1")

    def scope(peer: str, forwarded: str | None) -> dict[str, Any]:
        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
        return {"client": (peer, 1), "headers": headers}

    assert client_ip(scope("192.0.2.9", "1.1.1.1"), trusted) == "192.0.2.9"  # peer not a proxy
    assert client_ip(scope("10.1.1.1", "6.6.6.6, 1.1.1.1"), trusted) == "1.1.1.1"  # 6.6.6.6 is the client's claim
    assert client_ip(scope("10.1.1.1", "1.1.1.1, 10.2.2.2"), trusted) == "1.1.1.1"  # two proxies
    assert client_ip(scope("10.1.1.1", "junk, 10.2.2.2"), trusted) == "10.2.2.2"
    assert client_ip(scope("10.1.1.1", None), trusted) == "10.1.1.1"
    assert client_ip(scope("2001:db8::1", "2001:db8::99"), trusted) == "2001:db8::99"
    assert client_ip(scope("10.1.1.1", "1.1.1.1"), ()) == "10.1.1.1"  # nothing trusted: header ignored
    assert all(isinstance(n, (ipaddress.IPv4Network, ipaddress.IPv6Network)) for n in trusted)


async def test_expensive_endpoints_are_limited_per_token_subject(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05, rate_limit_expensive="3/minute")
    async with clients(create_app(settings), "203.0.113.30") as (client,):
        one, two = auth(settings, "provider", "p1"), auth(settings, "provider", "p2")
        first = [(await client.post("/providers", json=application(urn=str(400000 + n)), headers=one)).status_code
                 for n in range(4)]
        assert first == [201, 201, 201, 429]
        assert (await client.post("/providers", json=application(urn="400010"), headers=two)).status_code == 201
        # an anonymous caller has its own (open) limit, by address
        assert (await client.post("/providers", json=application(urn="400011"))).status_code == 201
        # a token that does not verify is not counted as that subject: the route answers 401
        bad = {"Authorization": "Bearer not-a-token"}
        assert (await client.post("/providers", json=application(urn="400012"), headers=bad)).status_code == 401


def test_every_rule_names_a_route_of_some_service(tmp_path: Path) -> None:
    import importlib

    routes = set()
    for service in ("enrolment", "referral", "matching", "notification"):
        app = importlib.import_module(f"services.{service}.app").create_app(Settings(data_dir=tmp_path))
        routes |= {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops}
    assert {(rule.method, rule.path) for rule in RULES} <= routes


async def test_the_database_storage_is_shared_by_two_replicas(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "shared.db")
    first, second = Database(url), Database(url)
    await create_core_schema(first)
    settings = Settings(data_dir=tmp_path, rate_limit_expensive="4/minute")
    replicas = [RateLimiter(settings, DatabaseStorage(db)) for db in (first, second)]
    rule = RULES[1]
    try:
        answers = [await replicas[n % 2].refused(rule, "borough:croydon:x", anonymous=False) for n in range(6)]
        assert answers[:4] == [None] * 4
        assert all(isinstance(a, int) and 1 <= a <= 60 for a in answers[4:])
        assert await replicas[1].refused(rule, "borough:lambeth:y", anonymous=False) is None
        stats = await replicas[0].strategy.get_window_stats(parse("4/minute"), rule.name, "borough:croydon:x")
        assert stats.remaining == 0

        async with first.transaction() as conn:  # croydon's window ends: its row goes at the next purge
            await conn.execute(sa.update(rate_limits).where(rate_limits.c.key.contains("croydon")).values(expires_at=0))
        storage = replicas[0].storage
        assert isinstance(storage, DatabaseStorage)
        storage._purged_at = 0.0
        assert await replicas[0].refused(rule, "borough:lambeth:y", anonymous=False) is None
        async with first.read() as conn:
            keys = (await conn.execute(sa.select(rate_limits.c.key))).scalars().all()
        assert len(keys) == 1 and "lambeth" in keys[0]
    finally:
        await first.dispose()
        await second.dispose()


async def test_limits_can_be_switched_off(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05, rate_limit_open="1/minute",
                        rate_limits_enabled=False)
    async with clients(create_app(settings), "203.0.113.40") as (client,):
        assert [(await client.post("/providers", json={})).status_code for _ in range(3)] == [422] * 3


def test_a_bad_limit_setting_is_refused() -> None:
    with pytest.raises(ValueError):
        Settings(rate_limit_open="lots")
    with pytest.raises(ValueError):
        Settings(trusted_proxies="10.0.0.0/33")


async def test_a_token_is_decoded_once_per_request_however_many_layers_ask(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate limiter, the Idempotency-Key middleware and the route all need the caller: one decode."""
    import jwt

    decoded: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real(token, *args, **kwargs)

    settings = Settings(data_dir=tmp_path, relay_poll_seconds=0.05)
    async with clients(create_app(settings), "203.0.113.40") as (client,):
        headers = {**auth(settings, "commissioner", "region"), "Idempotency-Key": str(uuid.uuid4())}
        monkeypatch.setattr(jwt, "decode", counting)
        answer = await client.post("/providers", json=application(urn="400020"), headers=headers)
        assert answer.status_code == 201, answer.text
        assert len(decoded) == 1
        bad = {"Authorization": "Bearer not-a-token", "Idempotency-Key": str(uuid.uuid4())}
        assert (await client.post("/providers", json=application(urn="400021"), headers=bad)).status_code == 401
