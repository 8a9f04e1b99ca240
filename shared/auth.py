"""Bearer JWTs: roles and tenants of DESIGN.md, minted for local use, checked by a dependency."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable, Literal

import jwt
from fastapi import Request

from shared import context
from shared.errors import DomainError, Forbidden
from shared.settings import Settings

Role = Literal["commissioner", "borough", "provider", "auditor"]
ROLES: tuple[str, ...] = ("commissioner", "borough", "provider", "auditor")


class Unauthorized(DomainError):
    status = 401
    title = "Unauthorized"


@dataclass(frozen=True)
class Principal:
    sub: str
    role: str
    tenant: str

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.tenant}"


def mint_token(settings: Settings, role: str, tenant: str, sub: str | None = None,
               ttl_seconds: int = 30 * 24 * 3600) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    now = int(time.time())
    claims = {"sub": sub or f"{role}:{tenant}", "role": role, "tenant": tenant, "iat": now,
              "exp": now + ttl_seconds, "jti": str(uuid.uuid4())}
    key = settings.jwt_private_key if settings.jwt_algorithm == "RS256" else settings.jwt_secret
    return jwt.encode(claims, key, algorithm=settings.jwt_algorithm)


def decode_token(settings: Settings, token: str) -> Principal:
    key = settings.jwt_public_key if settings.jwt_algorithm == "RS256" else settings.jwt_secret
    try:
        claims = jwt.decode(token, key, algorithms=[settings.jwt_algorithm],
                            options={"require": ["sub", "role", "tenant", "exp"]})
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid bearer token: {exc}", field="Authorization") from exc
    if claims["role"] not in ROLES:
        raise Unauthorized(f"unknown role {claims['role']!r}", field="Authorization")
    return Principal(sub=str(claims["sub"]), role=str(claims["role"]), tenant=str(claims["tenant"]))


def principal_from(request: Request) -> Principal | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Authorization must be 'Bearer <token>'", field="Authorization")
    principal = decode_token(request.app.state.settings, token.strip())
    context.actor.set(principal.actor)
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

    return dependency
