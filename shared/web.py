"""Web helpers every service uses: problem+json errors, Idempotency-Key, correlation ids, health."""
from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from datetime import timedelta
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson
import sqlalchemy.exc
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import delete, select, update
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import context
from shared.auth import verified_principal
from shared.db import insert_ignore
from shared.errors import DomainError
from shared.events import format_time, now_utc
from shared.inputs import InputRefused, check_path, check_query, decode_json, is_json
from shared.logs import get_logger
from shared.schema import idempotency_effects, idempotency_keys

PROBLEM = "application/problem+json"
_CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
log = get_logger("placematch.web")


def problem_type(rule: str | None) -> str:
    """A problem's `type`: `/problems/<rule>` (a page each service serves, see shared.openapi), or
    `about:blank` for one that names no rule."""
    return f"/problems/{rule}" if rule and re.fullmatch(r"[A-Za-z0-9_.-]+", rule) else "about:blank"


def problem(status: int, title: str, detail: str, *, headers: dict[str, str] | None = None,
            **extensions: Any) -> JSONResponse:
    body = {"type": problem_type(extensions.get("rule")), "title": title, "status": status, "detail": detail,
            **{k: v for k, v in extensions.items() if v is not None}}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


RULES_OF_PYDANTIC: dict[str, str] = {
    "string_too_long": "max_length", "too_long": "max_items",
    "greater_than": "range", "greater_than_equal": "range", "less_than": "range", "less_than_equal": "range",
    "decimal_max_places": "two_decimal_places",
    "date_parsing": "format", "date_from_datetime_parsing": "format", "date_from_datetime_inexact": "format",
    "date_type": "format", "datetime_parsing": "format", "datetime_from_date_parsing": "format",
    "datetime_type": "format", "datetime_object_invalid": "format", "uuid_parsing": "format",
    "string_pattern_mismatch": "format", "timezone_aware": "timezone",
    "enum": "one_of", "literal_error": "one_of",
}
"""Pydantic's error types for typed fields (dates, instants, UUIDs, codes, bounds) as the rule words the
domain's own checks use, so typing a field does not change what a client is told. Other types
(`missing`, `extra_forbidden`, `int_type`, ...) pass through as they always have. A field that needs
another word raises `PydanticCustomError(rule, message)` in a validator (a custom type passes through)."""


def rule_of(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", "invalid"))
    return RULES_OF_PYDANTIC.get(kind, kind)


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            headers = {**(headers or {}), "Retry-After": str(retry_after)}
        return problem(exc.status, exc.title, exc.detail, headers=headers, field=exc.field, rule=exc.rule)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):  # StrictJSONMiddleware's, if bypassed
            return problem(422, "Invalid request", "the body is not JSON", field="body", rule="invalid_json")
        errors = [{"field": _field_of(tuple(e.get("loc", ()))), "rule": rule_of(e),
                   "message": e.get("msg", "")} for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "rule": "invalid", "message": "invalid request"}
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Invalid request", detail, field=first["field"], rule=first["rule"], errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        unparsed = exc.status_code == 400 and exc.detail == "There was an error parsing the body"
        return problem(exc.status_code, _title(exc.status_code), str(exc.detail), headers=exc.headers,
                       field="body" if unparsed else None, rule="invalid_json" if unparsed else None)

    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    @app.exception_handler(sqlalchemy.exc.DBAPIError)
    @app.exception_handler(ConnectionError)
    async def _database_busy(request: Request, exc: Exception) -> JSONResponse:
        # No pool connection free within the pool's timeout (overload), the connection lost, or
        # the database locked: conditions that pass, so "retry later" rather than a 500. Other
        # operational errors (a missing table, say) are faults, and answered as such.
        if not _transient_database_error(exc):
            return await _unexpected(request, exc)
        log.warning("database busy or unreachable", error=str(exc)[:300])
        return _busy()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # the exception goes in the log's `exception` (type, message, frames, no local variables),
        # with credentials and personal values redacted (shared.logs); the request's body is never logged
        log.exception("unhandled error", error_type=type(exc).__name__, method=request.method,
                      path=request.url.path)
        return problem(500, "Internal error", "an unexpected error occurred; it has been logged with the "
                       f"correlation id {context.correlation_id.get()}")


def _busy() -> JSONResponse:
    return problem(503, "Service busy", "the service could not reach its database in time; retry after "
                   "Retry-After seconds (with the same Idempotency-Key a retry never takes effect twice)",
                   headers={"Retry-After": "2"})


def _transient_database_error(exc: BaseException) -> bool:
    """A database that is busy (no pool connection in time, locked), unreachable or restarting."""
    if isinstance(exc, (sqlalchemy.exc.TimeoutError, ConnectionError)):
        return True
    if not isinstance(exc, sqlalchemy.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = getattr(exc, "orig", None)
    names = {cls.__name__ for cause in (orig, getattr(orig, "__cause__", None)) if cause is not None
             for cls in type(cause).__mro__}  # the driver's error, and asyncpg's under SQLAlchemy's adapter
    if names & {"PostgresConnectionError", "OperatorInterventionError", "CannotConnectNowError",
                "ConnectionDoesNotExistError", "ConnectionError", "OSError"}:
        return True
    text = str(orig or exc).lower()
    return any(sign in text for sign in ("database is locked", "could not connect", "connection refused",
                                         "connection was closed", "the database system is"))


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class CorrelationMiddleware:
    """Binds `X-Correlation-ID` (or a new one) to the request and echoes it in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = (headers.get(b"x-correlation-id") or b"").decode("latin-1")
        cid = given if _CORRELATION_ID.fullmatch(given) else str(uuid.uuid4())
        # not reset afterwards: the 500 handler runs outside this middleware and names the id;
        # each request runs in its own task, so the value cannot leak into another request
        context.correlation_id.set(cid)
        actor_token = context.actor.set(None)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-correlation-id", cid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_header)
        finally:
            context.actor.reset(actor_token)


class StrictJSONMiddleware:
    """Refuses, before any route or the Idempotency-Key middleware runs, what `decode_json`,
    `check_query` and `check_path` refuse; passes the body it read on unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check_path(scope.get("path", ""))
            check_query(scope.get("query_string", b""))
        except InputRefused as refused:
            await _refuse(refused, scope, receive, send)
            return
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
        if scope["method"] not in IdempotencyMiddleware.METHODS or not is_json(content_type):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body:
            try:
                decode_json(body)
            except InputRefused as refused:
                await _refuse(refused, scope, receive, send)
                return
        await self.app(scope, _replay_body(body), send)


async def _refuse(refused: InputRefused, scope: Scope, receive: Receive, send: Send) -> None:
    answer = problem(refused.status, "Invalid request", refused.detail, field=refused.field, rule=refused.rule)
    await answer(scope, receive, send)


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

    Personal data: the answer of a request that took effect is stored as the service's store
    seals it under the key of the stream it touched (`EventStore.seal_answer`); one whose key was
    destroyed since (erasure) is answered 409 `answer_erased` naming the resource.
    """

    METHODS = {"POST", "PUT", "PATCH", "DELETE"}
    STORED_ANSWER = "placematch.idempotency.stored_answer"
    """A route whose answer must not be kept as sent (it shows a secret once) puts the body to keep
    instead in `request.scope[STORED_ANSWER]`: a retry with the same key gets that one."""
    ORPHANED_AFTER = timedelta(seconds=10)
    """A claim whose owner has not renewed it for this long is orphaned (tests shorten it)."""
    RENEWALS_PER_LEASE = 3

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._running: set[tuple[str, str]] = set()
        """Keys of the requests this process is running (an own claim not among them is orphaned)."""

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
                captured["headers"] = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body", b"")
            held.append(message)

        owner = self.fastapi_app.state.runtime.instance_id
        done = asyncio.Event()
        lease = asyncio.create_task(self._renew(db, scope_key, key, done))
        token = context.idempotency_claim.set((scope_key, key, owner))
        self._running.add((scope_key, key))
        try:
            await self.app(scope, _replay_body(body), capture)
        finally:
            context.idempotency_claim.reset(token)
            done.set()
            await lease  # no renewal may land after the answer below
            if scope.get(self.STORED_ANSWER) is not None:
                captured = {**captured, "body": scope[self.STORED_ANSWER]}
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

        The answer of a request that took effect is kept as the service's store seals it under the
        key of the stream it touched (`EventStore.seal_answer`): personal data it quotes are then
        erased with that key, on every database, and no one edits stored answers afterwards."""
        async with db.transaction() as conn:
            mine = ((idempotency_keys.c.scope == scope_key) & (idempotency_keys.c.key == key)
                    & (idempotency_keys.c.owner == owner) & idempotency_keys.c.status.is_(None))
            effect = await _effect_of(conn, scope_key, key)
            transient = captured["status"] >= 500 or (captured["status"] in (409, 429) and any(
                k.lower() == "retry-after" for k, _ in captured["headers"]))
            if transient and effect is None:  # "try again later" must not become the answer
                await conn.execute(delete(idempotency_keys).where(mine))
            elif captured["status"] >= 500:
                await conn.execute(update(idempotency_keys).where(mine).values(**_answer_lost(effect.named)))
            else:
                kept = [(k, v) for k, v in captured["headers"]
                        if k.lower() in ("content-type", "location", "retry-after", "allow", "etag", "link",
                                           "www-authenticate")]
                values = {"status": captured["status"], "headers": orjson.dumps(kept).decode(),
                          "body": captured["body"], "sealed_under": None}
                if effect is not None:
                    sealed = await self.fastapi_app.state.runtime.store.seal_answer(
                        conn, effect.stream, captured["body"])
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
            effect = await _effect_of(conn, scope_key, key) if orphaned else None
            if orphaned and effect is None:  # its process died before recording anything
                taken = await conn.execute(update(idempotency_keys).where(unchanged).values(
                    owner=owner, created_at=format_time(now_utc())))
                # the takeover may have waited for a run still appending (its fence holds the claim):
                # what that run committed meanwhile is the key's effect, not a reason to run again
                effect = await _effect_of(conn, scope_key, key) if taken.rowcount else None
                if taken.rowcount and effect is None:
                    return None
                if effect is not None:
                    await conn.execute(update(idempotency_keys).where(where).values(**_answer_lost(effect.named)))
            elif orphaned:  # it took effect, then its process died before storing the answer
                await conn.execute(update(idempotency_keys).where(unchanged).values(**_answer_lost(effect.named)))
            if orphaned:
                row = (await conn.execute(select(idempotency_keys).where(where))).one()
            status, headers, body = row.status, row.headers, row.body
            if status is not None and row.fingerprint == fingerprint and row.sealed_under is not None:
                body = await self.fastapi_app.state.runtime.store.open_answer(conn, row.sealed_under, row.body)
                if body is None:  # sealed under a key that erasure destroyed since
                    effect = await _effect_of(conn, scope_key, key)
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


class Effect(NamedTuple):
    """What a keyed request recorded: the stream it touched, and what it created there if not the
    stream itself (an offer inside a referral)."""

    stream: str
    created: str | None

    @property
    def named(self) -> str:
        """The id an `answer_lost` / `answer_erased` problem names as `effect`: what was created."""
        return self.created or self.stream


async def _effect_of(conn: Any, scope_key: str, key: str) -> Effect | None:
    row = (await conn.execute(select(idempotency_effects.c.effect, idempotency_effects.c.created).where(
        (idempotency_effects.c.scope == scope_key) & (idempotency_effects.c.key == key)))).first()
    return Effect(row.effect, row.created) if row else None


def _stored_problem(rule: str, title: str, effect: str, detail: str) -> dict[str, Any]:
    body = {"type": problem_type(rule), "title": title, "status": 409, "rule": rule, "effect": effect, "detail": detail}
    return {"status": 409, "headers": orjson.dumps([["content-type", PROBLEM]]).decode(), "body": orjson.dumps(body),
            "sealed_under": None}


def _answer_lost(effect: str) -> dict[str, Any]:
    """The stored answer for a request that took effect but whose response was lost."""
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


def _caller(scope: Scope, settings: Any) -> str | None:
    """Who is asking, from a token that verifies; "anonymous" without one, None for a bad one."""
    if not any(k == b"authorization" and v for k, v in scope.get("headers") or ()):
        return "anonymous"
    principal = verified_principal(scope, settings)
    return None if principal is None else principal.caller


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay_body(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health", summary="Liveness")
    async def health(request: Request) -> dict[str, str]:
        return {"status": "ok", "service": request.app.state.runtime.name}

    @router.get("/ready", summary="Database and bus reachable", responses={503: {"description": "not ready"}})
    async def ready(request: Request) -> Response:
        runtime = request.app.state.runtime
        checks = {"database": await runtime.db.ping(), "bus": await runtime.bus.ping()}
        if all(checks.values()):
            return JSONResponse({"status": "ready", "checks": checks})
        failing = ", ".join(k for k, ok in checks.items() if not ok)
        return problem(503, "Not ready", f"not reachable: {failing}", checks=checks)

    return router
