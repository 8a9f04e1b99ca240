"""ETag / If-Match over HTTP (issue 15): optimistic concurrency on the resources that change.

A resource's ETag is its stream version, quoted (`"3"`). Each service declares the routes whose
resource has one (`ETAGS` in its `schemas.py`: (method, path template)); on those:

- a 2xx answer carries `ETag`: the version the command left the aggregate at (`run_command`
  records it), else (a read) the body's top-level `version`;
- a write with `If-Match` runs only if the aggregate, loaded inside the command's transaction, is
  still at that version (`run_command` checks it before deciding); otherwise 412 problem+json
  (`rule: stale_version`, `field: If-Match`) and nothing is recorded. `If-Match: *` asks only that
  the resource exists. A tag that is not one of ours (`"bogus"`) can match no version: 412.
- without `If-Match`, a write works as it always has.
"""
from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import DomainError

ANY = -1
NEVER = -2
_TAG = re.compile(r'^\s*(?:W/)?"(\d{1,18})"\s*$')


class PreconditionFailed(DomainError):
    """If-Match named a version that is not the resource's current one: nothing was changed."""

    status = 412
    title = "Precondition failed"


@dataclass
class Precondition:
    expected: int | None = None
    """The version If-Match asks for (ANY for `*`, NEVER for a tag that is not a version)."""
    consumed: bool = False
    version: int | None = None
    """The resource's version, as the request's command left it (or as it was read)."""
    extra: dict[str, int] = field(default_factory=dict)


current: ContextVar[Precondition | None] = ContextVar("placematch_precondition", default=None)


def parse_if_match(value: str) -> int:
    if value.strip() == "*":
        return ANY
    tags = [tag for tag in value.split(",") if tag.strip()]
    found = _TAG.match(tags[0]) if len(tags) == 1 else None
    return int(found.group(1)) if found else NEVER


def take_expected() -> int | None:
    """The If-Match version for the request's (first) command, once; None without If-Match."""
    holder = current.get()
    if holder is None or holder.consumed or holder.expected is None:
        return None
    holder.consumed = True
    return holder.expected


def check(expected: int | None, actual: int, stream_id: str) -> None:
    """Refuse (412) unless `actual` is what If-Match asked for."""
    if expected is None:
        return
    if expected == ANY and actual > 0:  # (a new stream is at 0: `*` asks that the resource exist)
        return
    if expected != actual:
        told = "*" if expected == ANY else "a tag that is not a version" if expected == NEVER else f'"{expected}"'
        raise PreconditionFailed(f"If-Match is {told} but {stream_id} is at version \"{actual}\"; read it again "
                                 "and decide on what it is now", field="If-Match", rule="stale_version")


def etag_of(aggregate: Any) -> int:
    """An aggregate's ETag: its `etag` if it names one (matching's policy: its policy version),
    else its stream version."""
    etag = getattr(aggregate, "etag", None)
    return etag if isinstance(etag, int) else int(aggregate.version)


def record_version(version: int) -> None:
    holder = current.get()
    if holder is not None:
        holder.version = version


class PreconditionMiddleware:
    """Reads If-Match on the declared routes, and answers them with an ETag."""

    def __init__(self, app: ASGIApp, routes: set[tuple[str, str]]) -> None:
        self.app = app
        self.declared = routes
        """(method, path template): filled when the routers are in (shared.openapi.install_contract)."""
        self._compiled: list[tuple[str, re.Pattern[str]]] | None = None

    def _declared(self, scope: Scope) -> bool:
        if self._compiled is None or len(self._compiled) != len(self.declared):
            self._compiled = [(method, compile_path(path)[0]) for method, path in sorted(self.declared)]
        return any(method == scope["method"] and regex.match(scope.get("path", ""))
                   for method, regex in self._compiled)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._declared(scope):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"if-match")
        holder = Precondition(expected=None if given is None else parse_if_match(given.decode("latin-1")))
        token = current.set(holder)
        started: list[Message] = []

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.append(message)  # held until the body is known (a GET may name its version in it)
                return
            if started:
                start = started.pop()
                version = holder.version
                if version is None and not message.get("more_body") and 200 <= start["status"] < 300:
                    version = _body_version(message.get("body", b""))
                names = {k.lower() for k, _ in start.get("headers", [])}
                if version is not None and 200 <= start["status"] < 300 and b"etag" not in names:
                    start = {**start, "headers": [*start.get("headers", []), (b"etag", f'"{version}"'.encode())]}
                await send(start)
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            current.reset(token)


def _body_version(body: bytes) -> int | None:
    try:
        data = orjson.loads(body) if body[:1] == b"{" else None
    except orjson.JSONDecodeError:
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None
