"""Input rules every service shares: a strict JSON body, visible text, plausible dates.

`decode_json` (run by `shared.web.StrictJSONMiddleware` on every JSON request body) decodes every
JSON request body once more, strictly, before any route runs, and refuses what Python's `json`
(and so FastAPI) would let through but no service can store: a body that is not UTF-8 or not
JSON (`NaN`, `Infinity`), a key given twice (the last
would silently win), a NUL (PostgreSQL text cannot hold one) or a lone surrogate (not encodable
as UTF-8: the event store could not write the event), an integer outside 64 bits, a number too
large for a double, nesting deeper than any request model. Query strings and paths with a NUL
are refused too. The answer is a 422 problem+json naming the field (`outcomes.0`,
`location.postcode`) and the rule; a body that cannot be parsed at all names `body`.

`clean_text`/`is_blank` are for text that must say something (a name, a reason): Unicode NFC,
without the whitespace and invisible characters (zero-width spaces, joiners, BOMs, fillers) at
either end, so a name made only of invisible characters is blank.
"""
from __future__ import annotations

import json
import re
import unicodedata
from datetime import date
from typing import Any
from urllib.parse import parse_qsl

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_DEPTH = 32
"""Deeper than any request model nests (they go 3 levels deep)."""
EARLIEST_DATE = date(1990, 1, 1)
"""No record the services keep (inspections, outcomes) is older than this."""
YEARS_AHEAD = 5
"""How far ahead a start date (required_from, an offer's start) may plausibly be."""
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")  # Hangul fillers, braille blank


class InputRefused(Exception):
    """A request refused before it reaches a route: `status`, `field`, `rule`, `detail`."""

    def __init__(self, status: int, field: str, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.field = field
        self.rule = rule
        self.detail = detail


class _Duplicated(dict[str, Any]):
    """An object in which `key` was given more than once (found with its path by `_check`)."""

    def __init__(self, pairs: list[tuple[str, Any]], key: str) -> None:
        super().__init__(pairs)
        self.key = key


class _Parsing:
    """Hooks for `json.loads` that note what needs a closer look: an object with a repeated key
    (marked `_Duplicated`), an integer of 19 digits or more, a float that overflowed. A NUL or a
    lone surrogate can only come as a `\\u` escape (strict UTF-8 and JSON allow neither raw)."""

    def __init__(self) -> None:
        self.suspect = False

    def object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        self.suspect = True
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                return _Duplicated(pairs, key)
            seen.add(key)
        raise AssertionError("unreachable")  # pragma: no cover

    def integer(self, text: str) -> int:
        self.suspect = self.suspect or len(text.lstrip("-")) >= 19
        return int(text)

    def number(self, text: str) -> float:
        value = float(text)
        self.suspect = self.suspect or value in (_INFINITY, -_INFINITY)
        return value


_INFINITY = float("inf")
_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def decode_json(body: bytes) -> Any:
    """The JSON value of `body`, or `InputRefused` saying which field breaks which rule."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputRefused(422, "body", "not_utf8",
                           f"the body is not UTF-8 (byte {error.start} cannot be decoded)") from None
    try:
        parsing = _Parsing()
        value = json.loads(text, object_pairs_hook=parsing.object, parse_int=parsing.integer,
                           parse_float=parsing.number, parse_constant=_constant)
    except json.JSONDecodeError as error:
        raise InputRefused(422, "body", "invalid_json", f"the body is not JSON: {error.msg} at line "
                           f"{error.lineno} column {error.colno}") from None
    except (ValueError, RecursionError) as error:  # NaN/Infinity, too many digits, too deep
        raise InputRefused(422, "body", "invalid_json", f"the body is not JSON: {error}") from None
    if (parsing.suspect or ("\\u" in text and _ESCAPE.search(text))
            or text.count("[") + text.count("{") >= MAX_DEPTH):
        _check(value, [])
    return value


def _name(path: list[str | int]) -> str:
    return ".".join(str(p) for p in path) or "body"


def _check(value: Any, path: list[str | int]) -> None:
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InputRefused(422, _name(path), "range",
                               f"{_name(path)} is out of range: a number must fit in 64 bits")
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InputRefused(422, _name(path), "finite_number",
                               f"{_name(path)} is too large a number")
    elif len(path) >= MAX_DEPTH:
        raise InputRefused(422, _name(path), "max_depth", f"{_name(path)} is nested too deeply")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, [*path, index])
    elif isinstance(value, dict):
        if isinstance(value, _Duplicated):
            field = _name([*path, value.key]) if _encodable(value.key) else _name(path)
            raise InputRefused(422, field, "duplicate_key",
                               f"{field} is given more than once; give each field once")
        for key, item in value.items():
            if not _encodable(key):
                _check_text(key, path, what="a field name in")
            _check(item, [*path, key])


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _encodable(text: str) -> bool:
    return "\x00" not in text and not _has_surrogate(text)


def _check_text(text: str, path: list[str | int], what: str = "") -> None:
    field = _name(path)
    if "\x00" in text:
        raise InputRefused(422, field, "nul_character", f"{what + ' ' if what else ''}{field} contains a NUL "
                           "character (\\u0000), which no text may hold")
    if _has_surrogate(text):
        raise InputRefused(422, field, "lone_surrogate", f"{what + ' ' if what else ''}{field} contains a lone "
                           "UTF-16 surrogate (\\ud800-\\udfff), which is not a character")


def is_json(content_type: str) -> bool:
    """Whether FastAPI parses a body of this content type as JSON (as it does with none)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or (media.startswith("application/") and media.endswith("+json"))


def check_query(query_string: bytes) -> None:
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            field = name if "\x00" not in name else "query"
            raise InputRefused(422, field, "nul_character", f"query parameter {field} contains a NUL character")


def check_path(path: str) -> None:
    if "\x00" in path:
        raise InputRefused(422, "path", "nul_character", "the path contains a NUL character")


# --- text ------------------------------------------------------------------------------------------

def _invisible(char: str) -> bool:
    return char.isspace() or char in _INVISIBLE_LETTERS or unicodedata.category(char) in ("Cf", "Cc")


def clean_text(text: str) -> str:
    """`text` in NFC without whitespace or invisible characters at either end."""
    text = unicodedata.normalize("NFC", text)
    start, end = 0, len(text)
    while start < end and _invisible(text[start]):
        start += 1
    while end > start and _invisible(text[end - 1]):
        end -= 1
    return text[start:end]


def is_blank(text: str) -> bool:
    """Nothing visible: empty, whitespace, or only zero-width and other invisible characters."""
    return not clean_text(text)


def years_ahead(today: date, years: int = YEARS_AHEAD) -> date:
    """The same day `years` later (28 February for 29 February)."""
    try:
        return today.replace(year=today.year + years)
    except ValueError:
        return today.replace(year=today.year + years, day=28)
