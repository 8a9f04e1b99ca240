"""The machine-readable HTTP contract every service shares (issue 15).

`install_contract(app)` (called by `shared.service.create_service_app`) makes each service's
OpenAPI document one a client can be generated from, without code in the services' routes:

- stable, readable operationIds (`raiseReferral`, `submitOffer`, `listProviders`): the route
  function's name in camelCase, or the name in `OPERATION_IDS`;
- the bearer token as a `securitySchemes` entry, applied to each operation whose route depends on
  `shared.auth.require` (or `optional_principal`: with or without a token);
- every error status an operation can answer, each as `application/problem+json` with the one
  shared `Problem` schema (FastAPI's `HTTPValidationError` in `application/json` is gone: a 422 is
  sent as problem+json);
- `Idempotency-Key` (every write) and `If-Match` (writes of a resource with an ETag) as header
  parameters;
- examples that stay valid whatever the date: every dated example is shifted at startup by the days
  between `EXAMPLES_WRITTEN_ON` and today, so a deadline written as "in two months" stays so;
- `Allow` on a 405 names every method of the path, and a body that is not JSON is 415;
- problem `type`s are URIs (`/problems/<rule>`, relative to the service) that resolve to a page
  naming the rule: `/problems` lists every rule the code can answer with.
"""
from __future__ import annotations

import html
import importlib
import re
import typing
from collections.abc import Iterator
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pydantic_core
from fastapi import APIRouter, FastAPI, Request, routing
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.auth import optional_principal
from shared.inputs import is_json

PROBLEM = "application/problem+json"
PROBLEMS_PATH = "/problems"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
EXAMPLES_WRITTEN_ON = date(2026, 5, 1)
"""When the services' dated examples were written: each is shown shifted by the days since."""

OPERATION_IDS: dict[str, str] = {
    # service.function -> operationId, where the function's own name does not say enough
    "enrolment.apply": "applyToJoin",
    "enrolment.get_provider": "getProvider",
    "enrolment.history": "getProviderHistory",
    "enrolment.record_inspection": "recordInspection",
    "enrolment.record_outcomes": "recordOutcomes",
    "enrolment.approve": "approveProvider",
    "enrolment.reject": "rejectProvider",
    "enrolment.suspend": "suspendProvider",
    "enrolment.reinstate": "reinstateProvider",
    "enrolment.update": "updateProvider",
    "referral.amend": "amendReferral",
    "referral.withdraw": "withdrawReferral",
    "referral.close": "closeReferral",
    "referral.award": "awardOffer",
    "referral.erase": "eraseChildDetails",
    "referral.audit": "getAuditPack",
    "referral.decline": "declineInvitation",
    "matching.eligible_providers": "listEligibleProviders",
    "matching.shortlist": "getShortlist",
    "placement.create": "recordOffFrameworkPlacement",
    "matching.put_policy": "changePolicy",
    "placement.start": "startPlacement",
    "placement.end": "endPlacement",
    "placement.collapse": "collapsePlacement",
    "placement.funding": "agreeFunding",
    "placement.review": "reviewPlacement",
    "placement.spend": "getSpend",
    "placement.reviews_due": "listReviewsDue",
    "shared.health": "getHealth",
    "shared.ready": "getReadiness",
    "shared.problem_types": "listProblemTypes",
    "shared.problem_type": "getProblemType",
}



def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _owner(route: APIRoute) -> str:
    module = getattr(route.endpoint, "__module__", "")
    parts = module.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else parts[0]


def operation_id(route: APIRoute) -> str:
    """FastAPI's `generate_unique_id_function`: the stable operationId of a route."""
    return OPERATION_IDS.get(f"{_owner(route)}.{route.name}", _camel(route.name))


# --- the Problem schema -----------------------------------------------------------------------------

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details. Key on `rule` (also the last segment of `type`) and `field`.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference",
                 "description": "`/problems/<rule>` (a page naming the rule), or `about:blank`",
                 "examples": ["/problems/range"]},
        "title": {"type": "string", "examples": ["Invalid request"]},
        "status": {"type": "integer", "minimum": 100, "maximum": 599, "examples": [422]},
        "detail": {"type": "string", "examples": ["weekly_fee_pence: must be at least 1"]},
        "field": {"type": "string", "description": "the offending field, header or `body`",
                  "examples": ["weekly_fee_pence"]},
        "rule": {"type": "string", "description": "the rule broken; see /problems", "examples": ["range"]},
        "errors": {"type": "array", "description": "every invalid field, when there are several",
                   "items": {"$ref": "#/components/schemas/ProblemError"}},
    },
    "additionalProperties": True,
}
PROBLEM_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "title": "ProblemError", "required": ["field", "rule"],
    "properties": {"field": {"type": "string"}, "rule": {"type": "string"}, "message": {"type": "string"}},
    "additionalProperties": True,
}

DESCRIPTIONS = {
    400: "the body could not be read", 401: "missing or invalid bearer token",
    403: "the caller's role or tenant may not do this", 404: "no such resource visible to the caller",
    405: "method not allowed on this path (Allow names those that are)",
    409: "not allowed in the resource's current state, or an Idempotency-Key conflict (may carry Retry-After)",
    412: "If-Match names a version that is no longer current: nothing was changed",
    413: "the body is too large", 415: "the body is not JSON (Content-Type)",
    422: "invalid input: `field` and `rule` name what is wrong, nothing was changed",
    429: "too many requests (Retry-After)", 503: "the database is busy or unreachable (Retry-After)",
}
_RETRY = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    405: {"Allow": {"description": "the methods of this path", "schema": {"type": "string"}}},
    409: _RETRY, 429: _RETRY, 503: _RETRY,
}


def _problem_response(status: int) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": DESCRIPTIONS.get(status, "error"),
                              "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    if status in HEADERS:
        answer["headers"] = HEADERS[status]
    return answer


# --- who may call an operation ------------------------------------------------------------------------

def _auth(dependant: Dependant) -> str | None:
    """"required", "optional" or None: what the route's dependencies ask of the bearer token."""
    found: str | None = None
    for sub in dependant.dependencies:
        if sub.call is not None and getattr(sub.call, "placematch_roles", None) is not None:
            return "required"
        if sub.call is optional_principal:
            found = "optional"
        inner = _auth(sub)
        if inner == "required":
            return inner
        found = found or inner
    return found


def _roles(dependant: Dependant) -> tuple[str, ...] | None:
    for sub in dependant.dependencies:
        roles = getattr(sub.call, "placematch_roles", None)
        if roles is not None:
            return tuple(roles)
        inner = _roles(sub)
        if inner is not None:
            return inner
    return None


# --- examples relative to today -----------------------------------------------------------------------

_DATED = re.compile(r"^(\d{4}-\d{2}-\d{2})(T.*)?$")


def _shift(value: Any, delta: timedelta) -> Any:
    if isinstance(value, str):
        found = _DATED.match(value)
        if not found:
            return value
        try:
            day = date.fromisoformat(found.group(1))
        except ValueError:
            return value
        return (day + delta).isoformat() + (found.group(2) or "")
    if isinstance(value, list):
        return [_shift(v, delta) for v in value]
    if isinstance(value, dict):
        return {k: _shift(v, delta) for k, v in value.items()}
    return value


def shift_examples(node: Any, delta: timedelta) -> None:
    """Shift, in place, every ISO date or instant under an `example`/`examples` key by `delta`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("example", "examples"):
                node[key] = _shift(value, delta)
            else:
                shift_examples(value, delta)
    elif isinstance(node, list):
        for item in node:
            shift_examples(item, delta)


def examples_delta(today: date | None = None) -> timedelta:
    return (today or date.today()) - EXAMPLES_WRITTEN_ON


# --- the document -----------------------------------------------------------------------------------

def _statuses(route: APIRoute, method: str, auth: str | None, etags: set[tuple[str, str]]) -> list[int]:
    has_body = route.body_field is not None
    params = route.dependant.path_params or route.dependant.query_params or route.dependant.header_params
    found = {429, 503}
    if has_body or params or method in WRITES:
        found.add(422)
    if has_body:
        found |= {400, 413, 415}
    if auth == "required":
        found |= {401, 403}
    elif auth == "optional":
        found.add(401)
    if route.dependant.path_params or auth is not None:
        found.add(404)
    if method in WRITES:
        found.add(409)
    if method in WRITES and (method, route.path_format) in etags:
        found.add(412)
    return sorted(found)


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "a key (a UUID is best) that makes a retry of this write return the first answer and "
                   "never take effect twice; reused with another body it is 422",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[ -~]+$"},
}
IF_MATCH = {
    "name": "If-Match", "in": "header", "required": False,
    "description": "the ETag of the version this write is based on: a stale one is 412 and changes nothing",
    "schema": {"type": "string", "pattern": '^(\\*|(W/)?"[0-9]{1,18}")$', "examples": ['"3"']},
}
ETAG_HEADER = {"ETag": {"description": "the resource's version (its stream version, quoted)",
                        "schema": {"type": "string"}}}


DECIMAL_TEXT = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
"""What a decimal given as a string must look like (pydantic's Decimal parses it; `"abc"` is not one)."""


def _decimal_strings(node: Any) -> None:
    """Pydantic writes a Decimal as `anyOf [number, string]`: the string is given the decimal's syntax,
    so that a schema-valid string is one the service parses."""
    if isinstance(node, dict):
        choices = node.get("anyOf")
        if isinstance(choices, list) and {"type": "number"} in choices and {"type": "string"} in choices:
            node["anyOf"] = [c if c != {"type": "string"} else {"type": "string", "pattern": DECIMAL_TEXT}
                             for c in choices]
        for value in node.values():
            _decimal_strings(value)
    elif isinstance(node, list):
        for item in node:
            _decimal_strings(item)


def _optional_body(operation: dict[str, Any]) -> None:
    """An optional body is said as `required: false` and the model, not as `anyOf [model, null]`
    (generators then send no body when none is given, rather than a JSON `null` they cannot write)."""
    body = operation.get("requestBody")
    if not body or body.get("required"):
        return
    for media in body.get("content", {}).values():
        choices = media.get("schema", {}).get("anyOf")
        if choices and len(choices) == 2 and {"type": "null"} in choices:
            media["schema"] = next(c for c in choices if c != {"type": "null"})


def _schemas_modules(app: FastAPI) -> list[Any]:
    """The `schemas` module of each service whose routes the app serves (its contract declarations)."""
    found: dict[str, Any] = {}
    for route in api_routes(app):
        module = getattr(route.endpoint, "__module__", "")
        package = module.rsplit(".", 1)[0]
        if module.startswith("services.") and package not in found:
            try:
                found[package] = importlib.import_module(package + ".schemas")
            except ModuleNotFoundError:
                found[package] = None
    return [m for m in found.values() if m is not None]


def response_models(app: FastAPI) -> dict[str, type[BaseModel]]:
    """operationId -> the model of its 2xx body: `RESPONSES` of the service's `schemas` module."""
    found: dict[str, type[BaseModel]] = {}
    for schemas in _schemas_modules(app):
        found.update(getattr(schemas, "RESPONSES", {}))
    return found


def _attach_models(doc: dict[str, Any], models: dict[str, type[BaseModel]]) -> None:
    if not models:
        return
    distinct = sorted(set(models.values()), key=lambda m: m.__name__)
    refs, defs = models_json_schema([(m, "serialization") for m in distinct],
                                    ref_template="#/components/schemas/{model}")
    doc["components"]["schemas"].update(defs.get("$defs", {}))
    for _, _, operation in _each_operation(doc):
        model = models.get(operation.get("operationId", ""))
        if model is None:
            continue
        for status, answer in operation["responses"].items():
            if status.startswith("2") and status != "204":
                answer["content"] = {"application/json": {"schema": refs[(model, "serialization")]}}


def _each_operation(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in doc.get("paths", {}).items():
        for method, operation in methods.items():
            yield path, method, operation


def contract_document(app: FastAPI, *, today: date | None = None) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, openapi_version=app.openapi_version,
                      description=app.description, routes=app.routes)
    etags: set[tuple[str, str]] = getattr(app.state, "etags", set())
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["ProblemError"] = PROBLEM_ERROR_SCHEMA
    components["securitySchemes"] = {"bearer": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "a placematch token (`placematch token --role ROLE --tenant T`); its role and tenant "
                       "decide what the caller may do and see"}}
    for route in api_routes(app):
        if not route.include_in_schema:
            continue
        auth = _auth(route.dependant)
        roles = _roles(route.dependant)
        for method in route.methods:
            operation = doc["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            if auth == "required":
                operation["security"] = [{"bearer": []}]
            elif auth == "optional":
                operation["security"] = [{"bearer": []}, {}]
            else:
                operation["security"] = []
            if roles:
                operation["description"] = (operation.get("description", "") +
                                            f"\n\nRoles: {', '.join(roles)}.").strip()
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's HTTPValidationError: sent as problem+json instead
            etagged = (method, route.path_format) in etags
            for status in _statuses(route, method, auth, etags):
                responses[str(status)] = _problem_response(status)
            for status, answer in list(responses.items()):
                if status[:1] in ("4", "5"):  # a route's own note on an error keeps its description
                    responses[status] = {**_problem_response(int(status)),
                                         "description": answer.get("description") or DESCRIPTIONS.get(int(status))}
            for status, answer in responses.items():
                if not status.startswith("2"):
                    continue
                if status == "204":
                    answer.pop("content", None)
                    continue
                content = answer.setdefault("content", {"application/json": {}})
                for media in content.values():
                    if not media.get("schema"):
                        media["schema"] = {"type": "object", "additionalProperties": True}
                if status == "201":
                    answer.setdefault("headers", {})["Location"] = {
                        "description": "the created resource", "schema": {"type": "string"}}
                if etagged:
                    answer.setdefault("headers", {}).update(ETAG_HEADER)
                if "cursor" in {p.name for p in route.dependant.query_params}:
                    answer.setdefault("headers", {})["Link"] = {
                        "description": 'the next page, `<url>; rel="next"` (absent on the last page)',
                        "schema": {"type": "string"}}
            _optional_body(operation)
            parameters = operation.setdefault("parameters", [])
            if method in WRITES:
                parameters.append(IDEMPOTENCY_KEY)
            if etagged and method in WRITES:
                parameters.append(IF_MATCH)
            if not parameters:
                operation.pop("parameters")
    _attach_models(doc, response_models(app))
    _decimal_strings(doc["components"]["schemas"])
    shift_examples(doc, examples_delta(today))
    return doc


# --- the problem pages ---------------------------------------------------------------------------------

_RULE_IN_CODE = re.compile(r"""rule\s*=\s*["']([a-z][a-z0-9_]*)["']""")
_ROOT = Path(__file__).resolve().parents[1]


@cache
def known_rules() -> dict[str, str]:
    """Every rule a problem can name: the rule words in the code (`rule="..."`), the rule words
    pydantic's errors are translated to, and pydantic's own error types (they pass through)."""
    from shared.web import RULES_OF_PYDANTIC

    found: dict[str, str] = {}
    for kind in typing.get_args(pydantic_core.core_schema.ErrorType):
        found[kind] = "the value is not what the schema asks for (a JSON Schema type or constraint)"
    for word in RULES_OF_PYDANTIC.values():
        found[word] = "the value is outside what the schema allows (its format, bounds or codes)"
    for folder in ("shared", "services"):
        for path in sorted((_ROOT / folder).rglob("*.py")):
            for word in _RULE_IN_CODE.findall(path.read_text(encoding="utf-8", errors="replace")):
                found.setdefault(word, "a rule of the domain or of the request, named where it is refused")
    return dict(sorted(found.items()))


def problems_router() -> APIRouter:
    router = APIRouter(tags=["problems"])

    @router.get(PROBLEMS_PATH, summary="Every problem type (rule) this service can answer with",
                response_model=dict[str, str])
    async def problem_types() -> dict[str, str]:
        return known_rules()

    @router.get(PROBLEMS_PATH + "/{rule}", summary="The page of one problem type",
                response_class=HTMLResponse, responses={200: {"content": {"text/html": {}}}})
    async def problem_type(rule: str) -> HTMLResponse:
        rules = known_rules()
        if rule not in rules:
            from shared.errors import NotFound

            raise NotFound(f"no problem type {rule!r}; see {PROBLEMS_PATH}", field="rule", rule="unknown_rule")
        text = html.escape(rule)
        return HTMLResponse(f"<!doctype html><title>Problem: {text}</title><h1>{text}</h1>"
                            f"<p>{html.escape(rules[rule])}.</p><p>The problem's <code>field</code> names the "
                            f"field, header or <code>body</code>; <code>detail</code> says what is wrong.</p>")

    return router


# --- 405 and 415 -------------------------------------------------------------------------------------

def api_routes(app: FastAPI) -> list[Any]:
    """The app's API routes, through included routers (each proxies its route: path_format,
    methods, dependant, body_field, name, endpoint)."""
    return [context for context in routing.iter_route_contexts(app.routes)
            if isinstance(context.original_route, APIRoute)]


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method of every route whose path matches the request's."""
    methods: set[str] = set()
    for context in routing.iter_route_contexts(app.routes):
        path_format = getattr(context, "path_format", None)
        if path_format and compile_path(path_format)[0].match(scope.get("path", "")):
            methods |= set(getattr(context, "methods", None) or ())
    return sorted(methods)


class JSONContentMiddleware:
    """A write whose body is not JSON (its Content-Type says so) is 415 problem+json."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in WRITES:
            headers = dict(scope.get("headers") or [])
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            has_body = headers.get(b"content-length", b"0").strip() not in (b"0", b"") \
                or b"transfer-encoding" in headers
            if content_type and has_body and not is_json(content_type):
                from shared.web import problem

                await problem(415, "Unsupported media type", f"the body must be application/json, not "
                              f"{content_type[:80]!r}", headers={"Accept": "application/json"},
                              field="Content-Type", rule="json_only")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_contract(app: FastAPI) -> None:
    """After the routers are included: the contract document, the problem pages, 405's Allow."""
    from shared.web import problem

    app.include_router(problems_router())
    etags: set[tuple[str, str]] = app.state.etags if hasattr(app.state, "etags") else set()
    for schemas in _schemas_modules(app):
        etags.update(getattr(schemas, "ETAGS", set()))
    app.state.etags = etags  # the set PreconditionMiddleware reads (shared.service)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = contract_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        allow = ", ".join(allowed_methods(app, request.scope))
        return problem(405, "Method not allowed", f"{request.method} is not allowed on {request.url.path}; "
                       f"allowed: {allow}", headers={"Allow": allow})

    app.add_exception_handler(405, method_not_allowed)
