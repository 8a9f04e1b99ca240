"""One paging convention for every list (issue 15).

`GET /things?limit=N` answers the first page; when there may be more, the body's `next` is an
opaque cursor and a `Link: <...?cursor=...&limit=N>; rel="next"` header names the next page's URL;
`?cursor=` (with the same filters) gets it. The last page has `next: null` and no Link. A cursor
that is not one this service gave out is 422 (`field: cursor`, `rule: invalid_cursor`).

A cursor is the position to resume from, base64url-encoded JSON (`{"o": 200}`: an offset; `{"b":
"2026-..."}`: before an instant): opaque to clients, who must not build one. The old paging
parameters (`offset`, `before`) keep working for one release and are documented as deprecated.
"""
from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Query, Request, Response

from shared.errors import RuleViolation

MAX_OFFSET = 1_000_000
CURSOR = Query(None, max_length=500, description="the `next` of the previous page (opaque); omit for the first page")


def encode(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode(cursor: str, key: str) -> Any:
    """The position `key` of a cursor this service gave out; 422 for anything else."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        data = None
    if not isinstance(data, dict) or set(data) != {key}:
        raise RuleViolation("cursor is not one this service gave out; use the `next` of a page (or omit it)",
                            field="cursor", rule="invalid_cursor")
    return data[key]


def offset_of(cursor: str | None, offset: int, *, maximum: int) -> int:
    if cursor is None:
        return offset
    value = decode(cursor, "o")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise RuleViolation("cursor is not one this service gave out", field="cursor", rule="invalid_cursor")
    return value


def instant_of(cursor: str) -> datetime:
    value = decode(cursor, "b")
    try:
        instant = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise RuleViolation("cursor is not one this service gave out", field="cursor", rule="invalid_cursor")
    return instant


def next_page(request: Request, response: Response, position: dict[str, Any] | None) -> str | None:
    """The cursor of the page after this one (None on the last), with its `Link: rel="next"`."""
    if position is None:
        return None
    cursor = encode(position)
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", "offset", "before")]
    url = request.url.replace(query=urlencode([*query, ("cursor", cursor)]))
    response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return cursor


def offset_page(request: Request, response: Response, *, offset: int, limit: int, returned: int,
                total: int | None = None) -> str | None:
    """`next_page` for an offset-paged list: more when the page was full (or `total` says so)."""
    more = offset + returned < total if total is not None else returned >= limit
    return next_page(request, response, {"o": offset + returned} if more and returned else None)
