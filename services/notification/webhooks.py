"""Sending one webhook attempt over HTTP: SSRF re-check, signed headers, outcome."""
from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

from shared.errors import Forbidden
from shared.vocabulary import now_utc

from .retries import AttemptOutcome, AttemptResult, classify_http, parse_retry_after
from .signing import signature_headers
from .ssrf import check_resolved_addresses

USER_AGENT = "placematch-webhooks/1.0"


async def resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


async def send_webhook(
    client: httpx.AsyncClient,
    *,
    url: str,
    body: str,
    message_id: str,
    secrets: Sequence[str],
    allow_private: bool,
    timeout_seconds: float,
) -> AttemptOutcome:
    """One attempt. Redirects are not followed (a redirect could lead to a private address).

    Unless private targets are allowed, the host is resolved, every address checked, and the
    request sent to the checked address itself (Host header and TLS SNI/verification keep the
    name), so a DNS answer that changes between check and connect cannot reach a private address.
    """
    attempted_at = now_utc()
    started = time.perf_counter()
    parts = urlsplit(url)

    def done(code: int | None, error: str | None, retry_after: str | None = None) -> AttemptOutcome:
        result = classify_http(code)
        return AttemptOutcome(
            attempted_at=attempted_at,
            status_code=code,
            latency_ms=int((time.perf_counter() - started) * 1000),
            result=result,
            error=error,
            retry_after=parse_retry_after(retry_after, now=attempted_at) if retry_after else None,
        )

    target, extensions, pinned_host = url, {}, None
    try:
        if not allow_private:
            host = parts.hostname or ""
            addresses = await resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
            check_resolved_addresses(host, addresses, allow_private=False)
            address = addresses[0]
            literal = f"[{address}]" if ":" in address else address
            target = urlunsplit(parts._replace(netloc=literal + (f":{parts.port}" if parts.port else "")))
            pinned_host = parts.netloc.rpartition("@")[2]
            if parts.scheme == "https":
                extensions = {"sni_hostname": host}
    except Forbidden as refused:
        return dataclasses.replace(done(None, refused.detail), result=AttemptResult.REJECTED)
    except OSError as failure:
        return done(None, f"DNS lookup failed: {failure}")

    headers = {
        **signature_headers(message_id=message_id, body=body, secrets=secrets, at=attempted_at),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        **({"host": pinned_host} if pinned_host else {}),
    }
    try:
        response = await client.post(
            target, content=body.encode("utf-8"), headers=headers, timeout=timeout_seconds, follow_redirects=False,
            extensions=extensions,
        )
    except httpx.TimeoutException as failure:
        return done(None, f"timeout: {type(failure).__name__}")
    except httpx.HTTPError as failure:
        return done(None, f"{type(failure).__name__}: {failure}")
    error = None if 200 <= response.status_code < 300 else response.text[:200] or response.reason_phrase
    return done(response.status_code, error, response.headers.get("retry-after"))
