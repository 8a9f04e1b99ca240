"""Bearer JWTs: roles and tenants of DESIGN.md, minted for local use, checked by a dependency."""
from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from collections.abc import MutableMapping
from typing import Any, Awaitable, Callable, Literal

import jwt
from fastapi import Request

from shared import context, oidc
from shared.errors import DomainError, Forbidden
from shared.oidc import Unauthorized
from shared.settings import Settings

Role = Literal["commissioner", "borough", "provider", "auditor"]
ROLES: tuple[str, ...] = ("commissioner", "borough", "provider", "auditor")
TENANT_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""A borough code (croydon), region name, or provider id (a lower-case UUID fits): what the
read models hold in 64 characters. Tenants are compared in lower case."""
MAX_TENANT_LENGTH = 64
MAX_SUB_LENGTH = 100


class ClaimError(ValueError):
    """A claim a token must not carry: `claim` names it, `rule` the rule it breaks."""

    def __init__(self, claim: str, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.claim = claim
        self.rule = rule


@dataclass(frozen=True)
class Principal:
    sub: str
    role: str
    tenant: str
    name: str | None = None
    """`name` / `preferred_username` of an identity provider's token: for the audit record only,
    never in an event (shared/EVENTS.md, `actorid`)."""
    username: str | None = None

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.tenant}"

    @property
    def caller(self) -> str:
        """`role:tenant:sub`: who is asking, for per-caller keys (Idempotency-Key scope, rate limits)."""
        return f"{self.role}:{self.tenant}:{self.sub}"


def check_claims(role: object, tenant: object, sub: object) -> tuple[str, str, str]:
    """The role, tenant and subject a token may carry, role and tenant in lower case; else
    `ClaimError` naming the claim."""
    if not isinstance(role, str) or role.lower() not in ROLES:
        raise ClaimError("role", "one_of", f"role must be one of {', '.join(ROLES)}")
    if not isinstance(tenant, str):
        raise ClaimError("tenant", "type", f"tenant must be text, not {type(tenant).__name__}")
    if len(tenant) > MAX_TENANT_LENGTH:
        raise ClaimError("tenant", "max_length", f"tenant must be at most {MAX_TENANT_LENGTH} characters")
    if not TENANT_PATTERN.fullmatch(tenant.lower()):
        raise ClaimError("tenant", "format", f"tenant {tenant!r} is not a borough code, region or provider id "
                         "(letters, digits, - and _, starting with a letter or digit, e.g. croydon)")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_LENGTH or not sub.isprintable():
        raise ClaimError("sub", "format", f"sub must be 1 to {MAX_SUB_LENGTH} printable characters")
    return role.lower(), tenant.lower(), sub


def mint_token(settings: Settings, role: str, tenant: str, sub: str | None = None,
               ttl_seconds: int = 30 * 24 * 3600) -> str:
    """A signed token; `ClaimError` (a ValueError) for a role, tenant or sub no service accepts."""
    role, tenant, _ = check_claims(role, tenant, "-")
    role, tenant, sub = check_claims(role, tenant, f"{role}:{tenant}" if sub is None else sub)
    now = int(time.time())
    claims = {"sub": sub, "role": role, "tenant": tenant, "iat": now,
              "exp": now + ttl_seconds, "jti": str(uuid.uuid4())}
    key = settings.jwt_private_key if settings.jwt_algorithm == "RS256" else settings.jwt_secret
    return jwt.encode(claims, key, algorithm=settings.jwt_algorithm)


def decode_token(settings: Settings, token: str) -> Principal:
    """The caller of a token: checked by the identity provider's keys (shared/oidc.py) when it
    claims that issuer, or when tokens of `placematch token` are off; else by the shared secret."""
    verifier = oidc.verifier_for(settings)
    if verifier is not None and (not settings.local_tokens_enabled or oidc.unverified_issuer(token) == verifier.issuer):
        who = verifier.verify(token)
        return Principal(sub=who.sub, role=who.role, tenant=who.tenant, name=who.name, username=who.username)
    if not settings.local_tokens_enabled:
        raise Unauthorized("bearer tokens of `placematch token` are not accepted here (PLACEMATCH_LOCAL_TOKENS_"
                           "ENABLED=false) and no identity provider is configured", field="Authorization")
    return decode_local_token(settings, token)


def decode_local_token(settings: Settings, token: str) -> Principal:
    """A token of `placematch token`: the shared HS256 secret, or the static RS256 key."""
    key = settings.jwt_public_key if settings.jwt_algorithm == "RS256" else settings.jwt_secret
    try:
        claims = jwt.decode(token, key, algorithms=[settings.jwt_algorithm],
                            options={"require": ["sub", "role", "tenant", "exp"]})
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid bearer token: {exc}", field="Authorization") from exc
    try:
        role, tenant, sub = check_claims(claims["role"], claims["tenant"], claims["sub"])
    except ClaimError as error:
        raise Unauthorized(f"the token's {error.claim} claim is not valid: {error}",
                           field=f"Authorization.{error.claim}", rule=error.rule) from None
    return Principal(sub=sub, role=role, tenant=tenant)


_VERIFIED = "placematch.principal"
"""ASGI scope key: the caller of the request's bearer token, decoded once (None: no valid token)."""


def verified_principal(scope: MutableMapping[str, Any], settings: Settings) -> Principal | None:
    """The caller of a bearer token that verifies, else None. The rate limiter, the Idempotency-Key
    middleware and the route all ask: the token is decoded once and the answer kept in the scope."""
    if _VERIFIED not in scope:
        auth = next((v for k, v in scope.get("headers") or () if k == b"authorization"), b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        principal = None
        if scheme.lower() == "bearer" and token.strip():
            try:
                principal = decode_token(settings, token.strip())
            except DomainError:
                principal = None
        scope[_VERIFIED] = principal
    return scope[_VERIFIED]


def principal_from(request: Request) -> Principal | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Authorization must be 'Bearer <token>'", field="Authorization")
    # a token a middleware already verified is not decoded again; a bad one is, for its error
    principal = request.scope.get(_VERIFIED) or decode_token(request.app.state.settings, token.strip())
    context.actor.set(principal.actor)
    context.actor_id.set(principal.sub)
    context.person.set(principal if principal.name or principal.username else None)
    return principal


async def optional_principal(request: Request) -> Principal | None:
    """FastAPI dependency: the caller if a token was sent, else None."""
    return principal_from(request)


def require(*roles: str) -> Callable[[Request], Awaitable[Principal]]:
    """FastAPI dependency factory: a valid token with one of `roles` (any role if none given).

    Async on purpose: FastAPI runs sync dependencies in a thread, where the actor set for the
    event store would not reach the request's context.
    """

    async def dependency(request: Request) -> Principal:
        principal = principal_from(request)
        if principal is None:
            raise Unauthorized("a bearer token is required (placematch token --role ROLE --tenant T)",
                               field="Authorization")
        if roles and principal.role not in roles:
            raise Forbidden(f"role {principal.role!r} may not do this; needs {' or '.join(roles)}",
                            field="Authorization")
        return principal

    dependency.placematch_roles = roles  # type: ignore[attr-defined]  # read by shared.openapi
    return dependency
