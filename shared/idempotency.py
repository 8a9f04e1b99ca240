"""The Idempotency-Key protocol: a retried write gets the first answer, and never a second effect.

Everything of it lives here: its tables (`idempotency_keys`, `idempotency_effects`, core tables),
the claim of a key while its first request runs (a lease, `IdempotencyMiddleware`), the fence the
event store puts before every append of a keyed request (`fence`), the effect it records in the
same transaction as the events (`record_effect`), and how the answer is kept for the retries
(`AnswerPolicy`, which a service passes as `ServiceRuntime(..., answers=...)`).

Services never read or write the tables themselves. A service whose answers quote personal data
seals them under a key of its own (`AnswerPolicy.seal` / `open`): erasing that key is erasing the
answers too (a retry is answered 409 `answer_erased`), on every database and replica, with nothing
to edit here.
"""
from __future__ import annotations

import asyncio
import hashlib
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, NamedTuple

import orjson
from fastapi import FastAPI
from fastapi.responses import Response
from sqlalchemy import Column, Integer, LargeBinary, String, Table, Text, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import verified_principal
from shared.db import insert_ignore
from shared.errors import ClaimTakenOver
from shared.events import format_time, now_utc
from shared.logs import get_logger
from shared.schema import metadata
from shared.web import PROBLEM, WRITE_METHODS, _busy, _read_body, _replay_body, _transient_database_error, problem

log = get_logger("placematch.idempotency")

# --------------------------------------------------------------------------- tables (core schema)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(300), primary_key=True, doc="principal + method + path"),
    Column("key", String(200), primary_key=True),
    Column("fingerprint", String(64), nullable=False, doc="sha256 of the request body"),
    Column("status", Integer, nullable=True, doc="NULL while the first request is in progress"),
    Column("headers", Text, nullable=True),
    Column("body", LargeBinary, nullable=True),
    Column("created_at", String(40), nullable=False,
           doc="while in progress, when the owner was last heard from: it renews the claim"),
    Column("owner", String(36), nullable=True, doc="the process (runtime instance) that runs the first request"),
    Column("sealed_under", String(100), nullable=True,
           doc="the stream whose key seals `body` (the service's AnswerPolicy opens it); NULL: kept as is"),
)

idempotency_effects = Table(
    "idempotency_effects",
    metadata,
    Column("scope", String(300), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("effect", String(100), nullable=False,
           doc="stream id of the first event the request recorded, written in that event's transaction"),
    Column("created", String(100), nullable=True,
           doc="what the request created inside that stream (an offer), named instead of the stream"),
)

# --------------------------------------------------------------------------- the claim, its fence, its effect

claim: ContextVar[tuple[str, str, str] | None] = ContextVar("idempotency_claim", default=None)
"""(scope, key, owner instance id) of the keyed request being run in this task, if any."""


async def fence(conn: AsyncConnection) -> None:
    """Before a keyed request appends: go on only while its Idempotency-Key claim is still its own.
    One that another instance took over after this run's lease lapsed is refused (`ClaimTakenOver`,
    409), so the request never takes effect twice. The claim is share-locked until the transaction
    ends: a takeover (an UPDATE) waits for it, and then finds the effect this transaction recorded."""
    current = claim.get()
    if current is None:
        return
    scope, key, owner = current
    still_ours = (await conn.execute(
        select(idempotency_keys.c.key).where(
            (idempotency_keys.c.scope == scope) & (idempotency_keys.c.key == key)
            & (idempotency_keys.c.owner == owner) & idempotency_keys.c.status.is_(None))
        .with_for_update(read=True))).first()
    if still_ours is None:
        raise ClaimTakenOver("this request's Idempotency-Key was taken over by another instance after its "
                             "lease lapsed; that run takes effect, not this one", field="Idempotency-Key")


async def record_effect(conn: AsyncConnection, stream_id: str, created: str | None = None) -> None:
    """After a keyed request appended to `stream_id` (in the same transaction): its effect, which a
    retry after a crash is answered with (409 `answer_lost` naming `created`, else the stream).
    The first append of the request is its effect; later ones change nothing."""
    current = claim.get()
    if current is not None:
        await insert_ignore(conn, idempotency_effects,
                            {"scope": current[0], "key": current[1], "effect": stream_id, "created": created})


class Effect(NamedTuple):
    """What a keyed request recorded: the stream it touched, and what it created there if not the
    stream itself (an offer inside a referral)."""

    stream: str
    created: str | None

    @property
    def named(self) -> str:
        """The id an `answer_lost` / `answer_erased` problem names as `effect`: what was created."""
        return self.created or self.stream


async def effect_of(conn: Any, scope_key: str, key: str) -> Effect | None:
    row = (await conn.execute(select(idempotency_effects.c.effect, idempotency_effects.c.created).where(
        (idempotency_effects.c.scope == scope_key) & (idempotency_effects.c.key == key)))).first()
    return Effect(row.effect, row.created) if row else None

# --------------------------------------------------------------------------- the stored answer


class AnswerPolicy:
    """How the answer of a keyed request is kept for its retries, and given back; a service passes its
    own as `ServiceRuntime(..., answers=...)`. This one keeps every answer as sent.

    `kept` says what a retry gets of the answer sent (an answer that shows a secret once keeps
    another body); `seal` and `open` keep the answer of a request that took effect under a key of
    the stream it touched (personal data: destroying that key erases the answer too)."""

    def kept(self, status: int, body: bytes) -> bytes:
        """The body a retry with the same key gets, of the one this first answer sent: the same here."""
        return body

    async def seal(self, conn: AsyncConnection, stream_id: str, body: bytes) -> bytes | None:
        """The form in which the answer of a request that touched `stream_id` is kept: `body` itself
        (here), sealed under that stream's key, or None when it may not be kept (that stream's
        personal data were erased): the key is then answered 409 `answer_erased`. Runs in the
        transaction that stores the answer. A result other than `body` is opened with `open`."""
        return body

    async def open(self, conn: AsyncConnection, stream_id: str, sealed: bytes) -> bytes | None:
        """`seal` undone; None when the stream's key is gone (409 `answer_erased`)."""
        return sealed


def _stored_problem(rule: str, title: str, effect: str, detail: str) -> dict[str, Any]:
    body = {"type": f"/problems/{rule}", "title": title, "status": 409, "rule": rule, "effect": effect, "detail": detail}
    return {"status": 409, "headers": orjson.dumps([["content-type", PROBLEM]]).decode(), "body": orjson.dumps(body),
            "sealed_under": None}


def answer_lost(effect: str) -> dict[str, Any]:
    """The stored answer for a request that took effect but whose response was lost (column values)."""
    return _stored_problem("answer_lost", "Answer lost", effect,
                           f"the first request with this Idempotency-Key took effect on {effect}, but its answer "
                           "was lost when the service stopped; read that resource instead of retrying")


def erased_answer(effect: str) -> dict[str, Any]:
    """The answer of a key whose stored answer was sealed under a key erasure destroyed, or would
    have been (column values)."""
    return _stored_problem("answer_erased", "Answer erased", effect,
                           f"the first request with this Idempotency-Key took effect on {effect}; its answer "
                           "is no longer kept, as the personal data it was about have been erased; read that "
                           "resource instead")

# --------------------------------------------------------------------------- the middleware


class IdempotencyMiddleware:
    """`Idempotency-Key` on writes: a retried request gets the first response, nothing runs twice.

    The key is scoped to the caller (token subject), method and path. A first request claims the
    key for this process; a concurrent retry gets 409 with Retry-After. Reusing a key with a
    different body is a 422.

    The claim is a lease: while the request runs, its process renews the claim's `created_at`
    (the time its owner was last heard from) every `ORPHANED_AFTER / 3`, so a request that
    legitimately runs longer than `ORPHANED_AFTER` is never taken over by another replica.

    Crashes: the event store marks the claim with the request's effect in the same transaction
    as the events. A retry that finds a claim of a process that is gone (another instance id, not
    heard from for `ORPHANED_AFTER`) runs the request again if nothing was recorded, or, if the
    effect did commit but the answer was lost, answers 409 `answer_lost` naming the resource (never
    a second effect). A 5xx, or a 409/429 with Retry-After, without an effect is forgotten so the
    client may retry with the same key.

    What is kept of an answer, and how, is the service's `AnswerPolicy` (`runtime.answers`): the
    answer of a request that took effect is kept as it seals it under the key of the stream it
    touched; one whose key was destroyed since (erasure) is answered 409 `answer_erased` naming the
    resource.
    """

    METHODS = WRITE_METHODS
    ORPHANED_AFTER = timedelta(seconds=10)
    """A claim whose owner has not renewed it for this long is orphaned (tests shorten it)."""
    RENEWALS_PER_LEASE = 3

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._running: set[tuple[str, str]] = set()
        """Keys of the requests this process is running (an own claim not among them is orphaned)."""

    @property
    def _answers(self) -> AnswerPolicy:
        answers: AnswerPolicy = self.fastapi_app.state.runtime.answers
        return answers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        key = (headers.get(b"idempotency-key") or b"").decode("latin-1").strip()
        if not key:
            await self.app(scope, receive, send)
            return
        if not key.isascii() or not key.isprintable():
            await problem(422, "Invalid request", "Idempotency-Key must be printable ASCII (a UUID is best)",
                          field="Idempotency-Key", rule="printable_ascii")(scope, receive, send)
            return
        if len(key) > 200:
            await problem(422, "Invalid request", "Idempotency-Key must be at most 200 characters",
                          field="Idempotency-Key", rule="max_length")(scope, receive, send)
            return
        caller = _caller(scope, self.fastapi_app.state.settings)
        if caller is None:  # a token that does not verify: the route answers 401, nothing is kept
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if caller == "anonymous":  # open endpoints: one applicant's key must not answer another's
            caller = f"anonymous@{(scope.get('client') or ('?',))[0]}"
        scope_key = f"{caller} {scope['method']} {scope['path']}"
        fingerprint = hashlib.sha256(body).hexdigest()
        db = self.fastapi_app.state.runtime.db

        try:
            replay = await self._claim(db, scope_key, key, fingerprint)
        except Exception as error:
            if not _transient_database_error(error):
                raise
            log.warning("database busy or unreachable", error=str(error)[:300])
            replay = _busy()
        if replay is not None:
            await replay(scope, receive, send)
            return

        captured: dict[str, Any] = {"status": 500, "headers": [], "body": b""}
        held: list[Message] = []

        async def capture(message: Message) -> None:
            """Hold the answer back until it is stored: a client that saw it gets it again."""
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = [(k.decode("latin-1"), v.decode("latin-1"))
                                       for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body", b"")
            held.append(message)

        owner = self.fastapi_app.state.runtime.instance_id
        done = asyncio.Event()
        lease = asyncio.create_task(self._renew(db, scope_key, key, done))
        token = claim.set((scope_key, key, owner))
        self._running.add((scope_key, key))
        try:
            await self.app(scope, _replay_body(body), capture)
        finally:
            claim.reset(token)
            done.set()
            await lease  # no renewal may land after the answer below
            try:
                await self._store_answer(db, scope_key, key, owner, captured)
            except Exception as error:  # noqa: BLE001 - the answer still goes out; the claim's lease lapses
                log.warning("could not store the answer of an Idempotency-Key", key=key, error=str(error)[:300])
            finally:
                self._running.discard((scope_key, key))
        for message in held:
            await send(message)

    async def _store_answer(self, db: Any, scope_key: str, key: str, owner: str, captured: dict[str, Any]) -> None:
        """Keep the answer as the key's (or forget a "try again" one) — only while the claim is this
        process's: one another instance took over (and the store refused this run's appends) is its.

        The answer of a request that took effect is kept as the service's `AnswerPolicy` seals it
        under the key of the stream it touched: personal data it quotes are then erased with that
        key, on every database, and no one edits stored answers afterwards."""
        captured = {**captured, "body": self._answers.kept(captured["status"], captured["body"])}
        async with db.transaction() as conn:
            mine = ((idempotency_keys.c.scope == scope_key) & (idempotency_keys.c.key == key)
                    & (idempotency_keys.c.owner == owner) & idempotency_keys.c.status.is_(None))
            effect = await effect_of(conn, scope_key, key)
            transient = captured["status"] >= 500 or (captured["status"] in (409, 429) and any(
                k.lower() == "retry-after" for k, _ in captured["headers"]))
            if transient and effect is None:  # "try again later" must not become the answer
                await conn.execute(delete(idempotency_keys).where(mine))
            elif captured["status"] >= 500 and effect is not None:  # (a 5xx without an effect: forgotten above)
                await conn.execute(update(idempotency_keys).where(mine).values(**answer_lost(effect.named)))
            else:
                kept = [(k, v) for k, v in captured["headers"]
                        if k.lower() in ("content-type", "location", "retry-after", "allow", "etag", "link",
                                         "www-authenticate")]
                values = {"status": captured["status"], "headers": orjson.dumps(kept).decode(),
                          "body": captured["body"], "sealed_under": None}
                if effect is not None:
                    sealed = await self._answers.seal(conn, effect.stream, captured["body"])
                    if sealed is None:
                        values = erased_answer(effect.named)
                    elif sealed != captured["body"]:
                        values |= {"body": sealed, "sealed_under": effect.stream}
                await conn.execute(update(idempotency_keys).where(mine).values(**values))

    async def _renew(self, db: Any, scope_key: str, key: str, done: asyncio.Event) -> None:
        """Renew this process's claim until `done`: its owner is heard from (`created_at`)."""
        owner = self.fastapi_app.state.runtime.instance_id
        ours = ((idempotency_keys.c.scope == scope_key) & (idempotency_keys.c.key == key)
                & (idempotency_keys.c.owner == owner) & idempotency_keys.c.status.is_(None))
        every = self.ORPHANED_AFTER.total_seconds() / self.RENEWALS_PER_LEASE
        while True:
            try:
                await asyncio.wait_for(done.wait(), every)
                return
            except TimeoutError:
                pass
            try:
                async with db.transaction() as conn:
                    renewed = await conn.execute(update(idempotency_keys).where(ours).values(
                        created_at=format_time(now_utc())))
            except Exception as error:  # noqa: BLE001 - try again next time; the lease may lapse
                log.warning("could not renew an Idempotency-Key claim", key=key, error=str(error))
                continue
            if not renewed.rowcount:  # not heard from for too long: another replica took it over
                log.warning("Idempotency-Key claim taken over by another instance", key=key)
                return

    async def _claim(self, db: Any, scope_key: str, key: str, fingerprint: str) -> Response | None:
        owner = self.fastapi_app.state.runtime.instance_id
        where = (idempotency_keys.c.scope == scope_key) & (idempotency_keys.c.key == key)
        async with db.transaction() as conn:
            claimed = await insert_ignore(conn, idempotency_keys, {
                "scope": scope_key, "key": key, "fingerprint": fingerprint, "status": None,
                "created_at": format_time(now_utc()), "owner": owner})
            if claimed:
                return None
            row = (await conn.execute(select(idempotency_keys).where(where))).one()
            orphaned = (row.status is None and row.fingerprint == fingerprint
                        and (row.owner != owner or (scope_key, key) not in self._running)
                        and row.created_at < format_time(now_utc() - self.ORPHANED_AFTER))
            # only if the claim is still as read: its owner may renew it meanwhile (then it is alive)
            unchanged = (where & idempotency_keys.c.status.is_(None) & (idempotency_keys.c.owner == row.owner)
                         & (idempotency_keys.c.created_at == row.created_at))
            effect = await effect_of(conn, scope_key, key) if orphaned else None
            if orphaned and effect is None:  # its process died before recording anything
                taken = await conn.execute(update(idempotency_keys).where(unchanged).values(
                    owner=owner, created_at=format_time(now_utc())))
                # the takeover may have waited for a run still appending (its fence holds the claim):
                # what that run committed meanwhile is the key's effect, not a reason to run again
                effect = await effect_of(conn, scope_key, key) if taken.rowcount else None
                if taken.rowcount and effect is None:
                    return None
                if effect is not None:
                    await conn.execute(update(idempotency_keys).where(where).values(**answer_lost(effect.named)))
            elif orphaned and effect is not None:  # it took effect, then its process died before storing the answer
                await conn.execute(update(idempotency_keys).where(unchanged).values(**answer_lost(effect.named)))
            if orphaned:
                row = (await conn.execute(select(idempotency_keys).where(where))).one()
            status, headers, body = row.status, row.headers, row.body
            if status is not None and row.fingerprint == fingerprint and row.sealed_under is not None:
                body = await self._answers.open(conn, row.sealed_under, row.body)
                if body is None:  # sealed under a key that erasure destroyed since
                    effect = await effect_of(conn, scope_key, key)
                    erased = erased_answer(effect.named if effect else row.sealed_under)
                    status, headers, body = erased["status"], erased["headers"], erased["body"]
        if row.fingerprint != fingerprint:
            return problem(422, "Idempotency-Key reused", "this Idempotency-Key was already used with a "
                           "different request body; use a new key for a new request",
                           field="Idempotency-Key", rule="reused_with_different_body")
        if row.status is None:
            return problem(409, "Request in progress", "a request with this Idempotency-Key is still being "
                           "processed; retry shortly", headers={"Retry-After": "1"}, field="Idempotency-Key")
        response = Response(content=body, status_code=status)
        for k, v in orjson.loads(headers or "[]"):
            response.headers[k] = v
        response.headers["Idempotent-Replayed"] = "true"
        return response


def _caller(scope: Scope, settings: Any) -> str | None:
    """Who is asking, from a token that verifies; "anonymous" without one, None for a bad one."""
    if not any(k == b"authorization" and v for k, v in scope.get("headers") or ()):
        return "anonymous"
    principal = verified_principal(scope, settings)
    return None if principal is None else principal.caller
