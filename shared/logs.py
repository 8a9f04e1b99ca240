"""structlog set-up: JSON lines in production, readable in a terminal; correlation ids bound.

Logs carry no personal data and no credentials. Every event — ours and those of libraries going
through the standard library (uvicorn, SQLAlchemy, aiokafka) — passes `redact` last before it is
rendered: values under personal or secret keys (`child_ref`, `birth_date`, `authorization`,
`token`, `secret`, `password`, request and response `body`…) are replaced, and inside any string,
exception text and tracebacks included, bearer tokens, JWT-shaped strings, `whsec_` webhook secrets,
Fernet keys and SQLAlchemy's `[parameters: …]` are. Tracebacks are rendered as plain text (console)
or as a structured `exception` list (JSON), without local variables: a frame's locals hold request
bodies and tokens.
"""
from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor

REDACTED = "[redacted]"

PERSONAL_KEYS = frozenset({
    "child_ref", "birth_date", "date_of_birth", "dob", "child_name", "first_name", "last_name", "surname",
    "forename", "forenames", "full_name", "given_name", "family_name", "nhs_number", "upn",
})
"""Keys whose values identify a child, wherever they appear (events, request bodies, reprs)."""

SECRET_KEY_PARTS = ("secret", "password", "passwd", "authorization", "token", "cookie", "api_key", "apikey",
                    "private_key", "credential")
"""A key containing one of these holds a credential (`jwt_secret`, `smtp_password`, `access_token`…)."""

BODY_KEYS = frozenset({"body", "request_body", "response_body", "payload", "data", "headers"})
"""Request/response bodies and headers (an Idempotency-Key's stored answer, say): shown only as a size."""

_SENSITIVE_NAMES = (r"[\w-]*(?:" + "|".join(SECRET_KEY_PARTS) + r")[\w-]*|"
                    + "|".join(sorted(PERSONAL_KEYS, key=len, reverse=True)))
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # SQLAlchemy puts a statement's bound values in its error text
    (re.compile(r"\[parameters: .*?(?:\](?=\n)|\Z)", re.S), f"[parameters: {REDACTED}]"),  # also cut short
    (re.compile(r"(?i)\b(bearer|basic)[ \t]+[A-Za-z0-9._~+/=-]+"), rf"\1 {REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),  # JWT
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]*"), f"whsec_{REDACTED}"),
    (re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}=(?![A-Za-z0-9_=-])"), REDACTED),  # Fernet key
    # `child_ref='CR-1'`, `"birth_date": "2014-05-02"`, `token=abc` in reprs and messages
    (re.compile(rf"(?i)(?<![\w-])(['\"]?(?:{_SENSITIVE_NAMES})['\"]?\s*[:=]\s*)"
                r"(b?'[^']*'|b?\"[^\"]*\"|[^\s,;)}\]]+)"), rf"\1'{REDACTED}'"),
)


def redact_text(text: str) -> str:
    """`text` with credentials and personal key-value pairs replaced."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _sensitive_key(key: Any) -> bool:
    name = str(key).lower().replace("-", "_")
    return name in PERSONAL_KEYS or any(part in name for part in SECRET_KEY_PARTS)


def redact_value(value: Any, depth: int = 0) -> Any:
    """A copy of `value` with sensitive keys' values and sensitive strings replaced."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (bytes, bytearray)):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    if depth > 20:
        return REDACTED
    if isinstance(value, dict):
        return {k: _redact_item(k, v, depth) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact_text(repr(value))


def _redact_item(key: Any, value: Any, depth: int) -> Any:
    if _sensitive_key(key):
        return REDACTED
    if str(key).lower() in BODY_KEYS and isinstance(value, (str, bytes, bytearray, dict, list)):
        return f"{REDACTED} ({len(value)} {'bytes' if isinstance(value, (bytes, bytearray)) else 'items'})" \
            if not isinstance(value, str) else f"{REDACTED} ({len(value)} characters)"
    return redact_value(value, depth + 1)


def redact(_: object, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: drop personal data and credentials from every key and string."""
    return {key: value if key.startswith("_") else _redact_item(key, value, 0)
            for key, value in event_dict.items()}


def _add_correlation(_: object, __: str, event_dict: EventDict) -> EventDict:
    from shared import context

    cid = context.correlation_id.get()
    if cid and "correlation_id" not in event_dict:
        event_dict["correlation_id"] = cid
    return event_dict


def _renderers(fmt: str) -> list[Any]:
    """Exception formatting, redaction, rendering: the tail every event goes through."""
    if fmt == "json":
        exceptions: Any = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        return [exceptions, redact, structlog.processors.JSONRenderer()]
    console = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(),
                                            exception_formatter=structlog.dev.plain_traceback)
    return [structlog.processors.format_exc_info, redact, console]


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_correlation,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared], processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_renderers(fmt)]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "sqlalchemy.engine", "uvicorn.access", "mail.log", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
