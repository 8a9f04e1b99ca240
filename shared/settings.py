"""Settings for every service and command, read from `PLACEMATCH_*` environment variables."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PLACEMATCH_", extra="ignore")

    data_dir: Path = Field(Path("var"), description="Where embedded SQLite files and the local bus live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy async URL; default sqlite+aiosqlite:///<data_dir>/<service>.db"
    )
    kafka_bootstrap: str | None = Field(None, description="Kafka bootstrap servers; unset = in-process local bus.")
    kafka_partitions: int = Field(3, description="Partitions for topics created at start-up.")
    topic_prefix: str = Field("", description="Prepended to every topic name (isolates test runs).")
    jwt_secret: str = Field("placematch-dev-secret-change-me-0123456789", description="HS256 signing secret.")
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_public_key: str | None = Field(None, description="PEM public key when jwt_algorithm is RS256.")
    jwt_private_key: str | None = Field(None, description="PEM private key for `placematch token` with RS256.")
    host: str = "127.0.0.1"
    port: int | None = Field(None, description="HTTP port of `placematch serve`; default per service.")
    base_port: int = Field(8000, description="`placematch up`: services listen on base_port+1..+4.")
    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"
    relay_poll_seconds: float = Field(0.5, description="Outbox relay fallback poll when not woken.")
    consumer_max_attempts: int = Field(4, description="Attempts before an event goes to <topic>.dlq.")
    consumer_retry_base_seconds: float = 0.2
    placement_review_check_seconds: float = Field(
        60.0, gt=0, description="placement: How often reviews coming due are looked for (placement-review-due).")
    max_body_bytes: int = Field(1_048_576, ge=1, description="Largest request body accepted; a larger one is "
                                "answered 413 before the rest is read.")
    rate_limits_enabled: bool = Field(True, description="Per-client rate limits on the open and expensive "
                                      "endpoints (429 with Retry-After).")
    rate_limit_open: str = Field("120/minute;1000/hour", description="Anonymous POST /providers per client IP "
                                 "(`limits` notation; several windows separated by ;).")
    rate_limit_expensive: str = Field("600/minute", description="Each expensive endpoint (POST /referrals, "
                                      "offers, PUT /policy, /insights, POST /subscriptions, redelivery, audit pack, "
                                      "POST /providers with a token) per token subject.")
    rate_limit_storage: Literal["auto", "memory", "database"] = Field(
        "auto", description="Where the counters live; auto = the service's database when "
        "PLACEMATCH_DATABASE_URL is set (shared by replicas), else memory.")
    trusted_proxies: str = Field("", description="Comma-separated IPs or CIDRs of reverse proxies whose "
                                 "X-Forwarded-For names the client; unset = X-Forwarded-For is ignored.")
    otlp_endpoint: str | None = Field(None, description="OpenTelemetry collector (OTLP over HTTP, e.g. "
                                      "http://127.0.0.1:4318) that receives the traces; unset (and no "
                                      "OTEL_EXPORTER_OTLP_ENDPOINT) = tracing off.")


    # --- council sign-on: an OpenID Connect identity provider (shared/oidc.py, issue 17) ---------
    oidc_issuer: str | None = Field(None, description="OIDC issuer whose access tokens are accepted (its `iss`, "
                                    "e.g. https://login.microsoftonline.com/<tenant-id>/v2.0); unset = none.")
    oidc_audience: str | None = Field(None, description="The `aud` those tokens must carry (the API's client id "
                                      "or application ID URI). Required with oidc_issuer.")
    oidc_jwks_url: str | None = Field(None, description="The issuer's JWKS; unset = the `jwks_uri` of "
                                      "<issuer>/.well-known/openid-configuration.")
    oidc_role_claim: str = Field("role", description="Claim (dotted path, e.g. roles or realm_access.roles) "
                                 "holding the role; a list is searched for exactly one known role.")
    oidc_role_prefix: str = Field("", description="Prefix of role values in the role claim, e.g. `placematch.` "
                                  "for Entra app roles placematch.borough; values without it are ignored.")
    oidc_tenant_claim: str = Field("tenant", description="Claim (dotted path) holding the tenant: borough code, "
                                   "region or provider id.")
    oidc_groups_claim: str = Field("groups", description="Claim listing the caller's groups, read through "
                                   "oidc_group_map when the role or tenant claim is absent.")
    oidc_group_map: Path | None = Field(None, description="TOML or JSON file: group → tenant, or group → "
                                        "{role, tenant} (e.g. an Entra group object id → croydon).")
    oidc_leeway_seconds: float = Field(30.0, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat.")
    oidc_jwks_cache_seconds: int = Field(300, ge=1, description="How long fetched keys are trusted before "
                                         "the JWKS is fetched again.")
    oidc_jwks_min_refresh_seconds: float = Field(10.0, ge=0, description="Least time between two fetches "
                                                 "caused by a token naming a key id the cache lacks.")
    local_tokens_enabled: bool = Field(True, description="Also accept tokens of `placematch token` (shared "
                                       "secret or static RS256 key); set false when every caller signs on "
                                       "through oidc_issuer.")

    @field_validator("rate_limit_open", "rate_limit_expensive")
    @classmethod
    def _rate_limit_notation(cls, value: str) -> str:
        from limits import parse_many

        parse_many(value)  # ValueError names the bad notation
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        import ipaddress

        for part in filter(None, (p.strip() for p in value.split(","))):
            ipaddress.ip_network(part, strict=False)
        return value

    def database_url_for(self, service: str) -> str:
        if self.database_url:
            return self.database_url
        from shared.db import sqlite_url

        return sqlite_url(self.data_dir / f"{service}.db")

    def topic(self, name: str) -> str:
        """Full topic name, e.g. topic("enrolment") -> "placematch.enrolment"."""
        base = name if name.startswith("placematch.") else f"placematch.{name}"
        return f"{self.topic_prefix}{base}"
