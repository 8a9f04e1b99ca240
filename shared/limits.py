"""Abuse limits: a cap on request bodies, and per-client rate limits on the open and expensive endpoints.

`BodyLimitMiddleware` refuses a body over `Settings.max_body_bytes` with 413 problem+json before the
rest of it is read: a `Content-Length` over the cap is answered at once, without reading the body at
all; a chunked body is counted as it arrives and answered as soon as the count passes the cap. It sits
in front of the Idempotency-Key middleware, which reads whole bodies.

`RateLimitMiddleware` counts requests to the endpoints in `RULES` with the `limits` library (fixed
windows) and answers 429 problem+json with `Retry-After` once a client's window is used up. The client
is the token subject when a valid bearer token is sent, else the client's IP address; an
`X-Forwarded-For` header counts only when the peer is one of `Settings.trusted_proxies`. The counters
live in the service's database (`DatabaseStorage`, table `rate_limits`) when it has
`PLACEMATCH_DATABASE_URL`, so every replica on that database shares them; else in memory.
"""
from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from sqlalchemy import case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import verified_principal
from shared.db import Database
from shared.logs import get_logger
from shared.schema import rate_limits
from shared.settings import Settings
from shared.web import _busy, _transient_database_error, problem

log = get_logger("placematch.limits")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# ---- the body cap


class _BodyTooLarge(Exception):
    """Raised from `receive` once a body passes the cap; the middleware answers 413."""


def _too_large(max_bytes: int) -> Any:
    return problem(413, "Content too large", f"the request body is larger than {max_bytes} bytes; the rest of it "
                   "was not read (PLACEMATCH_MAX_BODY_BYTES)", headers={"Connection": "close"},
                   field="body", rule="max_body_bytes")


class BodyLimitMiddleware:
    """413 problem+json for a body over `max_bytes`, before the rest of it is read.

    `Connection: close` on the answer makes the server drop the connection instead of reading (and
    discarding) what the client still sends.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _too_large(self.max_bytes)(scope, receive, send)
            return
        received = 0
        exceeded = False
        started = False

        async def counted() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def answer(message: Message) -> None:
            nonlocal started
            if exceeded and not started:  # what the app made of the error: the 413 below replaces it
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, answer)
        except _BodyTooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _too_large(self.max_bytes)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed Content-Length itself
    return None


# ---- rate limits


@dataclass(frozen=True)
class Rule:
    """An endpoint with a rate limit. `open`: anonymous callers are limited per IP (else they get 401
    from the route without touching the database, and only token holders are counted)."""

    name: str
    method: str
    path: str
    open: bool = False

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", self.path) + "$")


RULES: tuple[Rule, ...] = (
    Rule("apply", "POST", "/providers", open=True),
    Rule("raise-referral", "POST", "/referrals"),
    Rule("offer", "POST", "/referrals/{referral_id}/offers"),
    Rule("audit-pack", "GET", "/referrals/{referral_id}/audit"),
    Rule("policy", "PUT", "/policy"),
    Rule("insights", "GET", "/insights"),
    Rule("subscribe", "POST", "/subscriptions"),
    Rule("redeliver", "POST", "/deliveries/{delivery_id}/retry"),
)


class DatabaseStorage(Storage):
    """`limits` storage on the service's own database (PostgreSQL or SQLite): fixed-window counters
    in `rate_limits`, one row per (limit, endpoint, client), incremented by one atomic upsert, so the
    replicas of a service on one database share every limit. Expired rows are deleted now and then.
    Times are this host's clock (replicas are assumed to keep theirs in sync, e.g. NTP)."""

    STORAGE_SCHEME = ["placematch+database"]
    PURGE_EVERY_SECONDS = 60.0

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db
        self._purged_at = 0.0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sqlalchemy.exc.SQLAlchemyError

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        module: Any = postgresql if self.db.dialect == "postgresql" else sqlite
        insert = module.insert(rate_limits).values(key=key, count=amount, expires_at=now + expiry)
        lapsed = rate_limits.c.expires_at <= now
        stmt = insert.on_conflict_do_update(index_elements=["key"], set_={
            "count": case((lapsed, amount), else_=rate_limits.c.count + amount),
            "expires_at": case((lapsed, now + expiry), else_=rate_limits.c.expires_at),
        }).returning(rate_limits.c.count)
        async with self.db.transaction() as conn:
            count = int((await conn.execute(stmt)).scalar_one())
        if now - self._purged_at > self.PURGE_EVERY_SECONDS:
            self._purged_at = now
            await self._purge(now)
        return count

    async def _purge(self, now: float) -> None:
        """Housekeeping: a purge that fails (e.g. two replicas' purges deadlocking) waits for the next."""
        try:
            async with self.db.transaction() as conn:
                await conn.execute(delete(rate_limits).where(rate_limits.c.expires_at < now))
        except sqlalchemy.exc.SQLAlchemyError as error:
            log.warning("could not purge expired rate-limit counters", error=str(error)[:300])

    async def _row(self, key: str) -> Any:
        async with self.db.read() as conn:
            return (await conn.execute(select(rate_limits).where(
                (rate_limits.c.key == key) & (rate_limits.c.expires_at > time.time())))).one_or_none()

    async def get(self, key: str) -> int:
        row = await self._row(key)
        return int(row.count) if row else 0

    async def get_expiry(self, key: str) -> float:
        row = await self._row(key)
        return float(row.expires_at) if row else time.time()

    async def check(self) -> bool:
        return await self.db.ping()

    async def reset(self) -> int | None:
        async with self.db.transaction() as conn:
            return (await conn.execute(delete(rate_limits))).rowcount

    async def clear(self, key: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(delete(rate_limits).where(rate_limits.c.key == key))


def make_storage(settings: Settings, db: Database) -> Storage:
    """The service database when it is shared (PLACEMATCH_DATABASE_URL) or asked for, else memory."""
    kind = settings.rate_limit_storage
    if kind == "auto":
        kind = "database" if settings.database_url else "memory"
    return DatabaseStorage(db) if kind == "database" else MemoryStorage()


class RateLimiter:
    """The limits of `settings` over one storage; `refused` says how long a client must wait."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.open_limits: list[RateLimitItem] = parse_many(settings.rate_limit_open)
        self.expensive_limits: list[RateLimitItem] = parse_many(settings.rate_limit_expensive)
        self.strategy = FixedWindowRateLimiter(storage)
        self.storage = storage

    async def refused(self, rule: Rule, client: str, *, anonymous: bool) -> int | None:
        """Count one request; None if it may go on, else the seconds until the client may retry."""
        items = self.open_limits if anonymous else self.expensive_limits
        for item in items:
            if not await self.strategy.hit(item, rule.name, client):
                stats = await self.strategy.get_window_stats(item, rule.name, client)
                return max(1, math.ceil(stats.reset_time - time.time()))
        return None


class RateLimitMiddleware:
    """429 problem+json with Retry-After once a client has used up its window on a limited endpoint."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, limiter: RateLimiter) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.limiter = limiter
        settings: Settings = fastapi_app.state.settings
        self.settings = settings
        self.trusted = parse_networks(settings.trusted_proxies)
        self._rules = [(rule, rule.pattern) for rule in RULES]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rule = self._match(scope) if scope["type"] == "http" else None
        if rule is None:
            await self.app(scope, receive, send)
            return
        subject = token_subject(scope, self.settings)
        if subject is None and not rule.open:  # the route answers 401: nothing to count
            await self.app(scope, receive, send)
            return
        client = subject or f"ip:{client_ip(scope, self.trusted)}"
        try:
            wait = await self.limiter.refused(rule, _short(client), anonymous=subject is None)
        except Exception as error:
            if not _transient_database_error(error):
                raise
            log.warning("database busy or unreachable", error=str(error)[:300])
            await _busy()(scope, receive, send)
            return
        if wait is None:
            await self.app(scope, receive, send)
            return
        which = "PLACEMATCH_RATE_LIMIT_OPEN" if subject is None else "PLACEMATCH_RATE_LIMIT_EXPENSIVE"
        await problem(429, "Too many requests", f"too many {rule.method} {rule.path} requests from this "
                      f"{'address' if subject is None else 'token subject'}; retry after {wait} s ({which})",
                      headers={"Retry-After": str(wait)}, rule="rate_limit")(scope, receive, send)

    def _match(self, scope: Scope) -> Rule | None:
        method, path = scope["method"], scope["path"]
        for rule, pattern in self._rules:
            if rule.method == method and pattern.match(path):
                return rule
        return None


def token_subject(scope: Scope, settings: Settings) -> str | None:
    """`role:tenant:sub` of a bearer token that verifies, else None (no token, or a bad one)."""
    principal = verified_principal(scope, settings)
    return None if principal is None else principal.caller


def parse_networks(text: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def client_ip(scope: Scope, trusted: Sequence[Network]) -> str:
    """The peer's address; behind a trusted proxy, the rightmost X-Forwarded-For hop that is not one
    of the trusted proxies (what the nearest proxy saw). Without trusted proxies X-Forwarded-For is
    ignored: any client could write it."""
    peer = str((scope.get("client") or ("unknown",))[0])
    if not trusted or not _within(peer, trusted):
        return peer
    forwarded = b",".join(v for k, v in scope.get("headers") or () if k == b"x-forwarded-for").decode("latin-1")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    nearest = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return nearest  # not an address: what the trusted proxy next to it saw is all we know
        if not _within(hop, trusted):
            return hop
        nearest = hop
    return nearest


def _within(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _short(client: str) -> str:
    """Keys stay short whatever a token's subject is."""
    return client if len(client) <= 100 else "sha256:" + hashlib.sha256(client.encode()).hexdigest()


def install_limits(app: FastAPI, settings: Settings, db: Database) -> None:
    """Add the rate limiter (if enabled) and, in front of it, the body cap; call after the Idempotency
    middleware is added, so that both sit in front of it (Starlette runs the last added first)."""
    if settings.rate_limits_enabled:
        limiter = RateLimiter(settings, make_storage(settings, db))
        app.state.rate_limiter = limiter
        app.add_middleware(RateLimitMiddleware, fastapi_app=app, limiter=limiter)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)


__all__ = ["BodyLimitMiddleware", "DatabaseStorage", "RULES", "RateLimitMiddleware", "RateLimiter", "Rule",
           "client_ip", "install_limits", "make_storage", "token_subject"]
