"""Web helpers every service uses: problem+json errors, strict JSON bodies, correlation ids, health.

`Idempotency-Key` is `shared.idempotency`'s."""
from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy.exc
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import context
from shared.errors import DomainError
from shared.inputs import InputRefused, check_path, check_query, decode_json, is_json
from shared.logs import get_logger

PROBLEM = "application/problem+json"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""The methods whose bodies are checked here and whose `Idempotency-Key` is honoured (`shared.idempotency`)."""
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
        actor_id_token, person_token = context.actor_id.set(None), context.person.set(None)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-correlation-id", cid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_header)
        finally:
            context.actor.reset(actor_token)
            context.actor_id.reset(actor_id_token)
            context.person.reset(person_token)


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
        if scope["method"] not in WRITE_METHODS or not is_json(content_type):
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
