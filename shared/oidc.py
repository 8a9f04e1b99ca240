"""OpenID Connect resource server: bearer tokens issued by the partnership's identity provider.

A council's sign-on (Microsoft Entra ID, Okta, Keycloak, ...) signs access tokens with keys it
publishes as a JWKS and rotates. `OIDCVerifier` checks such a token:

- the key comes from the JWKS (URL given, or found in the issuer's
  `/.well-known/openid-configuration`), cached, and fetched again when a token names a `kid` the
  cache lacks (at most once per `oidc_jwks_min_refresh_seconds`, so random kids cannot make us
  hammer the provider);
- only RS256 and ES256 are accepted, with the key type the JWKS gives: never `none`, never an
  HMAC algorithm keyed with a public key;
- `iss`, `aud`, `exp` (required) and `nbf` (when present) are checked with a small leeway;
- the role and the tenant come from configurable claims (a dotted path into the claims, e.g.
  `roles` for Entra app roles, `realm_access.roles` for Keycloak realm roles), optionally through
  a group mapping file. A valid token whose role or tenant cannot be mapped is refused 403,
  naming the claim (`Authorization.<claim>`).

`shared.auth.decode_token` sends a token here when its (unverified) `iss` is the configured
issuer, or always when `PLACEMATCH_LOCAL_TOKENS_ENABLED=false`; other tokens go to the shared
secret of `placematch token`.
"""
from __future__ import annotations

import json
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from jwt import PyJWKClient, PyJWKClientError

from shared.errors import DomainError, Forbidden
from shared.settings import Settings

ALGORITHMS = ("RS256", "ES256")
"""The only signature algorithms a token from the identity provider may use."""
_KEY_TYPES = {"RS256": "RSA", "ES256": "EC"}


class Unauthorized(DomainError):
    status = 401
    title = "Unauthorized"


class IdentityProviderUnavailable(DomainError):
    """The provider's discovery document or keys could not be fetched: the token cannot be checked."""

    status = 503
    title = "Identity provider unavailable"
    retry_after = 5


@dataclass(frozen=True)
class Identity:
    """What a verified token says about the caller."""

    sub: str
    role: str
    tenant: str
    name: str | None = None
    username: str | None = None


@dataclass(frozen=True)
class GroupMapping:
    """Group name (as the groups claim gives it) → the role and/or tenant it stands for."""

    groups: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> GroupMapping:
        """A TOML or JSON file: `{"groups": {"<group>": "<tenant>" | {"tenant": .., "role": ..}}}`
        (the `groups` level may be left out)."""
        text = path.read_text(encoding="utf-8")
        doc: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: the group mapping must be a table of group name to tenant")
        table = doc.get("groups", doc)
        groups: dict[str, dict[str, str]] = {}
        for name, value in table.items():
            entry = {"tenant": value} if isinstance(value, str) else value
            if not isinstance(entry, dict) or not entry or set(entry) - {"role", "tenant"} \
                    or not all(isinstance(v, str) for v in entry.values()):
                raise ValueError(f"{path}: group {name!r} must map to a tenant, or to a table of role and/or tenant")
            groups[str(name)] = dict(entry)
        return cls(groups)


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at a dotted path (`realm_access.roles`); a claim whose own name has dots wins."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


@dataclass(frozen=True)
class ClaimMapping:
    role_claim: str = "role"
    role_prefix: str = ""
    tenant_claim: str = "tenant"
    groups_claim: str = "groups"
    groups: GroupMapping = field(default_factory=GroupMapping)

    def _from_groups(self, claims: Mapping[str, Any], what: str) -> set[str]:
        return {entry[what] for g in _strings(claim_at(claims, self.groups_claim))
                if (entry := self.groups.groups.get(g)) and what in entry}

    def _missing(self, claim: str, what: str) -> Forbidden:
        via = f" or a group in {self.groups_claim!r} that the group mapping names" if self.groups.groups else ""
        return Forbidden(f"the token has no {what} placematch knows: claim {claim!r} is missing or unmapped{via}",
                         field=f"Authorization.{claim}", rule="missing_claim")

    def role(self, claims: Mapping[str, Any]) -> str:
        from shared.auth import ROLES

        found = set()
        for value in _strings(claim_at(claims, self.role_claim)):
            if self.role_prefix:
                if not value.startswith(self.role_prefix):
                    continue
                value = value[len(self.role_prefix):]
            if value.lower() in ROLES:
                found.add(value.lower())
        if not found:
            found = {r.lower() for r in self._from_groups(claims, "role") if r.lower() in ROLES}
        if not found:
            raise self._missing(self.role_claim, "role")
        if len(found) > 1:
            raise Forbidden(f"the token gives several roles ({', '.join(sorted(found))}) in {self.role_claim!r}; "
                            "a caller acts in one", field=f"Authorization.{self.role_claim}", rule="ambiguous")
        return found.pop()

    def tenant(self, claims: Mapping[str, Any]) -> str:
        values = set(_strings(claim_at(claims, self.tenant_claim)))
        if not values:
            values = self._from_groups(claims, "tenant")
        if not values:
            raise self._missing(self.tenant_claim, "tenant")
        if len(values) > 1:
            raise Forbidden(f"the token gives several tenants ({', '.join(sorted(values))}); a caller acts for one",
                            field=f"Authorization.{self.tenant_claim}", rule="ambiguous")
        return values.pop()


class OIDCVerifier:
    """Checks tokens of one issuer for one audience, with the issuer's published keys."""

    def __init__(self, *, issuer: str, audience: str, jwks_url: str | None = None,
                 mapping: ClaimMapping | None = None, leeway: float = 30.0, cache_seconds: int = 300,
                 min_refresh_seconds: float = 10.0, timeout: float = 5.0) -> None:
        self.issuer = issuer
        self.audience = audience
        self.mapping = mapping or ClaimMapping()
        self.leeway = leeway
        self.cache_seconds = cache_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self.timeout = timeout
        self._jwks_url = jwks_url
        self._client: PyJWKClient | None = None
        self._refreshed = 0.0
        self._lock = threading.Lock()

    def jwks_url(self) -> str:
        """The configured JWKS URL, else the `jwks_uri` of the issuer's discovery document."""
        if self._jwks_url is None:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                response = httpx.get(url, timeout=self.timeout, follow_redirects=False)
                response.raise_for_status()
                doc = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise IdentityProviderUnavailable(f"the identity provider's discovery document {url} could not "
                                                  f"be read: {exc}", field="Authorization") from exc
            if not isinstance(doc, dict) or doc.get("issuer") != self.issuer \
                    or not isinstance(doc.get("jwks_uri"), str):
                raise IdentityProviderUnavailable(f"{url} does not describe issuer {self.issuer} with a jwks_uri",
                                                  field="Authorization")
            self._jwks_url = doc["jwks_uri"]
        return self._jwks_url

    def _jwks_client(self) -> PyJWKClient:
        with self._lock:
            if self._client is None:
                self._client = PyJWKClient(self.jwks_url(), cache_jwk_set=True, lifespan=self.cache_seconds,
                                           cache_keys=False, timeout=int(max(1, self.timeout)))
                self._refreshed = time.monotonic()
            return self._client

    def signing_key(self, kid: str) -> jwt.PyJWK:
        """The JWKS key `kid`, fetching the JWKS again when the cached one lacks it."""
        client = self._jwks_client()
        try:
            keys = client.get_signing_keys()
            match = next((k for k in keys if k.key_id == kid), None)
            if match is None and time.monotonic() - self._refreshed >= self.min_refresh_seconds:
                self._refreshed = time.monotonic()
                keys = client.get_signing_keys(refresh=True)
                match = next((k for k in keys if k.key_id == kid), None)
        except PyJWKClientError as exc:
            if "Unable to find" in str(exc) or "does not contain any" in str(exc):
                raise Unauthorized(f"invalid bearer token: {exc}", field="Authorization", rule="unknown_key") from exc
            raise IdentityProviderUnavailable(f"the identity provider's keys could not be fetched: {exc}",
                                              field="Authorization") from exc
        if match is None:
            raise Unauthorized(f"invalid bearer token: no key {kid!r} in the issuer's JWKS",
                               field="Authorization", rule="unknown_key")
        return match

    def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid bearer token: {exc}", field="Authorization") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise Unauthorized(f"invalid bearer token: algorithm {alg!r} is not accepted (only "
                               f"{', '.join(ALGORITHMS)})", field="Authorization", rule="algorithm")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("invalid bearer token: no key id (kid) in its header", field="Authorization",
                               rule="unknown_key")
        key = self.signing_key(kid)
        if key.key_type != _KEY_TYPES[alg] or key.algorithm_name != alg:
            raise Unauthorized(f"invalid bearer token: key {kid!r} is not a {alg} key", field="Authorization",
                               rule="algorithm")
        try:
            claims = jwt.decode(token, key.key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                                leeway=self.leeway, options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid bearer token: {exc}", field="Authorization") from exc
        return self.identity(claims)

    def identity(self, claims: Mapping[str, Any]) -> Identity:
        from shared.auth import ClaimError, check_claims

        role, tenant = self.mapping.role(claims), self.mapping.tenant(claims)
        try:
            role, tenant, sub = check_claims(role, tenant, claims.get("sub"))
        except ClaimError as error:
            claim = {"role": self.mapping.role_claim, "tenant": self.mapping.tenant_claim}.get(error.claim, error.claim)
            raise Forbidden(f"the token's {claim} claim is not valid here: {error}",
                            field=f"Authorization.{claim}", rule=error.rule) from None
        name, username = claims.get("name"), claims.get("preferred_username")
        return Identity(sub=sub, role=role, tenant=tenant,
                        name=name[:200] if isinstance(name, str) and name else None,
                        username=username[:200] if isinstance(username, str) and username else None)


_verifiers: dict[tuple[Any, ...], OIDCVerifier] = {}
_verifiers_lock = threading.Lock()


def verifier_for(settings: Settings) -> OIDCVerifier | None:
    """The verifier of these settings (one per configuration, so its key cache lives on), or None
    when no issuer is configured."""
    if not settings.oidc_issuer:
        return None
    if not settings.oidc_audience:
        raise ValueError("PLACEMATCH_OIDC_AUDIENCE must be set with PLACEMATCH_OIDC_ISSUER")
    key = (settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url, settings.oidc_role_claim,
           settings.oidc_role_prefix, settings.oidc_tenant_claim, settings.oidc_groups_claim,
           str(settings.oidc_group_map) if settings.oidc_group_map else None, settings.oidc_leeway_seconds,
           settings.oidc_jwks_cache_seconds, settings.oidc_jwks_min_refresh_seconds)
    with _verifiers_lock:
        verifier = _verifiers.get(key)
        if verifier is None:
            groups = GroupMapping.load(settings.oidc_group_map) if settings.oidc_group_map else GroupMapping()
            verifier = _verifiers[key] = OIDCVerifier(
                issuer=settings.oidc_issuer, audience=settings.oidc_audience, jwks_url=settings.oidc_jwks_url,
                mapping=ClaimMapping(role_claim=settings.oidc_role_claim, role_prefix=settings.oidc_role_prefix,
                                     tenant_claim=settings.oidc_tenant_claim, groups_claim=settings.oidc_groups_claim,
                                     groups=groups),
                leeway=settings.oidc_leeway_seconds, cache_seconds=settings.oidc_jwks_cache_seconds,
                min_refresh_seconds=settings.oidc_jwks_min_refresh_seconds)
        return verifier


def unverified_issuer(token: str) -> str | None:
    """The `iss` a token claims, before anything is checked (to choose who checks it)."""
    try:
        iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        return None
    return iss if isinstance(iss, str) else None
