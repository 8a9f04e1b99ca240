"""Issue 12: the shared input rules (shared/inputs.py)."""
from __future__ import annotations

import pytest

from shared.inputs import InputRefused, check_query, clean_text, decode_json, is_blank


@pytest.mark.parametrize(("body", "field", "rule"), [
    (b'{"a": 1, "a": 2}', "a", "duplicate_key"),
    (b'{"a": {"b": [1, {"c": 1, "c": 1}]}}', "a.b.1.c", "duplicate_key"),
    (b'{"a": ["x", "y\\u0000"]}', "a.1", "nul_character"),
    (b'{"a\\u0000": 1}', "body", "nul_character"),
    (b'{"a": "\\ud800"}', "a", "lone_surrogate"),
    (b'{"a": "\\udfff\\ud800"}', "a", "lone_surrogate"),
    (b'{"a": "\xed\xa0\x80"}', "body", "not_utf8"),  # a surrogate encoded as UTF-8 octets
    (b'{"a": "\xe9"}', "body", "not_utf8"),
    (b'{"a": 9223372036854775808}', "a", "range"),
    (b'{"a": -9223372036854775809}', "a", "range"),
    (b'{"a": 1e400}', "a", "finite_number"),
    (b'{"a": NaN}', "body", "invalid_json"),
    (b'{"a": -Infinity}', "body", "invalid_json"),
    (b'{"a": ' + b"1" * 5000 + b"}", "body", "invalid_json"),
    (b"{not json", "body", "invalid_json"),
    (b"[" * 100_000, "body", "invalid_json"),
    (b"[" * 40 + b"]" * 40, "0." * 31 + "0", "max_depth"),
])
def test_decode_json_refuses_naming_field_and_rule(body: bytes, field: str, rule: str) -> None:
    with pytest.raises(InputRefused) as refused:
        decode_json(body)
    assert (refused.value.status, refused.value.field, refused.value.rule) == (422, field, rule)
    assert refused.value.detail.encode("utf-8")  # the answer can always be written


def test_decode_json_keeps_what_is_fine() -> None:
    body = '{"name": "École\\u00e9", "n": 9223372036854775807, "m": -9223372036854775808, "x": 1.5, "l": [true, null]}'
    assert decode_json(body.encode()) == {"name": "Écoleé", "n": 2**63 - 1, "m": -(2**63), "x": 1.5,
                                          "l": [True, None]}


def test_a_nul_in_a_query_parameter_names_it() -> None:
    with pytest.raises(InputRefused) as refused:
        check_query(b"limit=5&before=2026%00")
    assert (refused.value.field, refused.value.rule) == ("before", "nul_character")
    check_query(b"before=2026-01-01T00%3A00%3A00Z&x=%C3%A9")


@pytest.mark.parametrize(("text", "cleaned"), [
    ("  Riverside School \u200b", "Riverside School"),
    ("\ufeffCafe\u0301", "Café"),  # NFC
    ("\u200b\u200c\u200d\u2060\ufeff", ""),
    ("\u3164\u115f \u2800", ""),
    ("a\u200bb", "a\u200bb"),  # inside a name: kept
])
def test_clean_text(text: str, cleaned: str) -> None:
    assert clean_text(text) == cleaned
    assert is_blank(text) is (cleaned == "")
