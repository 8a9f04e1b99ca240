"""Settings of the console (`PLACEMATCH_CONSOLE_*` beside the shared `PLACEMATCH_*` ones)."""
from __future__ import annotations

from pydantic import Field

from services import SERVICES
from shared.settings import Settings

PLACEMENT_OFFSET = 5
"""The placement service listens on base_port + 5 (8005)."""
CONSOLE_OFFSET = 6
"""The console listens on base_port + 6 (8006); the placement service has base + 5."""


class ConsoleSettings(Settings):
    console_port: int | None = Field(None, description="Port of the console; default base_port + 6.")
    console_enrolment_url: str | None = Field(None, description="Enrolment API; default http://host:base+1.")
    console_referral_url: str | None = Field(None, description="Referral API; default http://host:base+2.")
    console_matching_url: str | None = Field(None, description="Matching API; default http://host:base+3.")
    console_notification_url: str | None = Field(None, description="Notification API; default http://host:base+4.")
    console_placement_url: str | None = Field(None, description="Placement API; default http://host:base+5.")
    console_session_secret: str = Field("placematch-console-dev-session-secret-change-me", repr=False,
                                        description="Signs the session cookie; set a long random value in production.")
    console_session_max_age: int = Field(8 * 3600, ge=60, description="Seconds a sign-in lasts.")
    console_https: bool | None = Field(None, description="Secure cookies; default: on when the OIDC redirect is https.")
    console_dev_sign_in: bool = Field(False, description="Local development sign-in (pick a role and tenant; "
                                                         "mints a token with the JWT secret). Never in production.")
    console_oidc_issuer: str | None = Field(None, description="OpenID Connect issuer, e.g. "
                                                              "http://127.0.0.1:8080/realms/placematch")
    console_oidc_client_id: str = Field("placematch-console", description="Public client id (PKCE, no secret).")
    console_oidc_client_secret: str | None = Field(None, repr=False, description="Only for a confidential client.")
    console_oidc_redirect_uri: str | None = Field(None, description="Where the provider sends the person back; "
                                                                    "default <console>/auth/callback.")
    console_oidc_scope: str = "openid profile email"
    console_request_timeout_seconds: float = 10.0

    @classmethod
    def of(cls, settings: Settings | None) -> ConsoleSettings:
        """These settings from the shared ones (the environment fills in the console's own), as the
        services' `XSettings.of` do."""
        if isinstance(settings, ConsoleSettings):
            return settings
        if settings is None:
            return cls()
        return cls(**settings.model_dump(exclude_unset=True))

    def service_url(self, service: str) -> str:
        explicit = getattr(self, f"console_{service}_url")
        if explicit:
            return str(explicit).rstrip("/")
        offset = PLACEMENT_OFFSET if service == "placement" and service not in SERVICES else SERVICES.index(service) + 1
        return f"http://{self.host}:{self.base_port + offset}"

    @property
    def console_listen_port(self) -> int:
        """PLACEMATCH_CONSOLE_PORT, else PLACEMATCH_PORT (as for `placematch serve`), else base + 6."""
        return self.console_port or self.port or self.base_port + CONSOLE_OFFSET

    def production_problems(self) -> list[str]:
        """Why `placematch serve console` must not start with these settings (empty: it may)."""
        problems = []
        default = type(self).model_fields["console_session_secret"].default
        if self.console_session_secret == default or len(self.console_session_secret.encode()) < 32:
            problems.append("PLACEMATCH_CONSOLE_SESSION_SECRET is unset, the published default or shorter than "
                            "32 bytes: anyone could forge a session. Set a long random one (openssl rand -hex 32).")
        if self.console_dev_sign_in:
            problems.append("PLACEMATCH_CONSOLE_DEV_SIGN_IN is on: anyone could sign in as anyone. It is for "
                            "`placematch up` on one's own machine only.")
        if not (self.console_oidc_issuer or getattr(self, "oidc_issuer", None)):
            problems.append("No identity provider: set PLACEMATCH_CONSOLE_OIDC_ISSUER (or PLACEMATCH_OIDC_ISSUER).")
        return problems

    @property
    def secure_cookies(self) -> bool:
        if self.console_https is not None:
            return self.console_https
        return bool(self.console_oidc_redirect_uri and self.console_oidc_redirect_uri.startswith("https://"))
