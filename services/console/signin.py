"""Signing in: OpenID Connect (authorization code with PKCE, Authlib), or the local development
sign-in that mints a token with the JWT secret (only when `console_dev_sign_in` is on)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from authlib.integrations.starlette_client import OAuth, OAuthError
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from services.console import security
from services.console.render import render
from services.console.settings import ConsoleSettings
from shared.auth import ROLES, ClaimError, check_claims, mint_token
from shared.errors import DomainError
from shared.logs import get_logger

log = get_logger("placematch.console")

router = APIRouter()


def issuer_of(settings: ConsoleSettings) -> str | None:
    """The console's issuer, else the one whose tokens the services accept (PLACEMATCH_OIDC_ISSUER)."""
    issuer = settings.console_oidc_issuer or getattr(settings, "oidc_issuer", None)
    return str(issuer) if issuer else None


def oauth_for(settings: ConsoleSettings) -> OAuth | None:
    issuer = issuer_of(settings)
    if not issuer:
        return None
    oauth = OAuth()
    oauth.register(
        "oidc", client_id=settings.console_oidc_client_id, client_secret=settings.console_oidc_client_secret,
        server_metadata_url=issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": settings.console_oidc_scope, "code_challenge_method": "S256"})
    return oauth


def _settings(request: Request) -> ConsoleSettings:
    settings: ConsoleSettings = request.app.state.settings
    return settings


def claims_of(token: dict[str, Any]) -> dict[str, Any]:
    """The person's claims: the ID token's (userinfo), with `sub`, `role` and `tenant` taken from the
    access token when it is a JWT carrying them, since that token is what the services authorise
    (Keycloak's mappers put them in both)."""
    claims = dict(token.get("userinfo") or {})
    access = token.get("access_token")
    if isinstance(access, str) and access.count(".") == 2:
        import jwt

        try:
            unverified = jwt.decode(access, options={"verify_signature": False})
        except jwt.PyJWTError:
            unverified = {}
        for key in ("role", "tenant", "sub"):
            if unverified.get(key) is not None:
                claims[key] = unverified[key]
    return claims


async def identity_of(settings: ConsoleSettings, access_token: str,
                      claims: dict[str, Any]) -> tuple[str, str, str, str]:
    """Role, tenant, sub and name of the person, read as the services will read their token: through
    the services' own OIDC verifier and claim mapping (`shared.oidc`, PLACEMATCH_OIDC_*) where it is
    configured, else from the `role` and `tenant` claims."""
    verifier = _services_verifier(settings)
    if verifier is not None:
        who = await asyncio.to_thread(verifier.verify, access_token)  # may fetch the JWKS: not on the loop
        return who.role, who.tenant, who.sub, str(who.name or who.username or claims.get("name") or who.sub)
    role, tenant, sub = check_claims(claims.get("role"), claims.get("tenant"), claims.get("sub"))
    return role, tenant, sub, str(claims.get("name") or claims.get("preferred_username") or sub)


def _services_verifier(settings: ConsoleSettings) -> Any:
    if not getattr(settings, "oidc_issuer", None):
        return None
    try:
        from shared.oidc import verifier_for  # issue 17's verifier, where the tree has it
    except ImportError:
        return None
    return verifier_for(settings)


@router.get("/sign-in")
async def sign_in_page(request: Request) -> Response:
    settings = _settings(request)
    return render(request, "sign_in.html", oidc=request.app.state.oauth is not None,
                  dev=settings.console_dev_sign_in, title="Sign in")


@router.post("/sign-in/oidc")
async def oidc_start(request: Request) -> Response:
    await security.checked_form(request)
    oauth: OAuth | None = request.app.state.oauth
    if oauth is None:
        return render(request, "error.html", status_code=404, title="Sign-in not set up",
                      message="No identity provider is configured (PLACEMATCH_CONSOLE_OIDC_ISSUER).")
    settings = _settings(request)
    redirect_uri = settings.console_oidc_redirect_uri or str(request.url_for("oidc_callback"))
    try:
        response: Response = await oauth.oidc.authorize_redirect(request, redirect_uri)
    except Exception as error:  # noqa: BLE001 - discovery failed: the provider is down or misnamed
        return render(request, "error.html", status_code=503, title="Identity provider unavailable",
                      message=f"The sign-in service could not be reached ({type(error).__name__}). Try again later.")
    return response


@router.get("/auth/callback", name="oidc_callback")
async def oidc_callback(request: Request) -> Response:
    oauth: OAuth | None = request.app.state.oauth
    if oauth is None:
        return RedirectResponse("/sign-in", status_code=303)
    try:
        token = await oauth.oidc.authorize_access_token(request)
    except OAuthError as error:
        return render(request, "error.html", status_code=400, title="Sign-in did not complete",
                      message=f"The identity provider answered: {error.description or error.error}. Sign in again.")
    claims = claims_of(token)
    try:
        role, tenant, sub, name = await identity_of(_settings(request), token["access_token"], claims)
    except (ClaimError, DomainError) as error:
        return render(request, "error.html", status_code=403, title="Your account has no placematch role",
                      message=f"Your sign-in worked, but placematch cannot tell your role or organisation from it "
                              f"({error}). Ask your administrator to give your account a role and a tenant.")
    security.sign_in(request, sub=sub, role=role, tenant=tenant, name=name, via="oidc", token=token["access_token"])
    _keep_refresh(request, token)
    return RedirectResponse("/", status_code=303)


REFRESH_MARGIN_SECONDS = 30


def _keep_refresh(request: Request, token: dict[str, Any]) -> None:
    request.session["token"] = token["access_token"]
    expires_in = token.get("expires_in")
    if isinstance(expires_in, int | float):
        request.session["expires_at"] = int(time.time() + expires_in)
    if token.get("refresh_token"):
        request.session["refresh_token"] = token["refresh_token"]


async def refresh_if_due(request: Request) -> None:
    """Identity providers issue short-lived access tokens (Keycloak: minutes): one about to expire is
    renewed with the refresh token before the page calls the services; if that fails, the person is
    signed out (the next page asks them to sign in again)."""
    oauth: OAuth | None = request.app.state.oauth
    expires_at, refresh = request.session.get("expires_at"), request.session.get("refresh_token")
    if (oauth is None or not isinstance(expires_at, int) or not isinstance(refresh, str)
            or expires_at - REFRESH_MARGIN_SECONDS > time.time()):
        return
    settings = _settings(request)
    try:
        metadata = await oauth.oidc.load_server_metadata()
        form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": settings.console_oidc_client_id}
        if settings.console_oidc_client_secret:
            form["client_secret"] = settings.console_oidc_client_secret
        answer = await request.app.state.http.post(metadata["token_endpoint"], data=form,
                                                   headers={"Accept": "application/json"})
        token = answer.json() if answer.status_code == 200 else None
    except Exception as error:  # noqa: BLE001 - the provider unreachable: sign in again later
        log.warning("could not refresh an access token", error=type(error).__name__)
        token = None
    if not isinstance(token, dict) or not isinstance(token.get("access_token"), str):
        security.sign_out(request)
        return
    _keep_refresh(request, token)


@router.get("/dev-sign-in")
async def dev_sign_in_page(request: Request) -> Response:
    if not _settings(request).console_dev_sign_in:
        return render(request, "error.html", status_code=404, title="Page not found",
                      message="The development sign-in is switched off.")
    return render(request, "dev_sign_in.html", roles=ROLES, title="Development sign-in", errors={}, values={})


@router.post("/dev-sign-in")
async def dev_sign_in(request: Request) -> Response:
    settings = _settings(request)
    if not settings.console_dev_sign_in:
        return render(request, "error.html", status_code=404, title="Page not found",
                      message="The development sign-in is switched off.")
    form = await security.checked_form(request)
    role, tenant = str(form.get("role") or ""), str(form.get("tenant") or "").strip()
    name = str(form.get("name") or "").strip() or f"{role} officer"
    errors: dict[str, str] = {}
    if role not in ROLES:
        errors["role"] = "Select the role to sign in as"
    if not tenant:
        errors["tenant"] = "Enter the borough code or provider id to sign in for"
    if not errors:
        try:
            token = mint_token(settings, role, tenant, sub=f"dev:{name}"[:100],
                               ttl_seconds=settings.console_session_max_age)
        except ClaimError as error:
            errors[error.claim] = str(error)
    if errors:
        return render(request, "dev_sign_in.html", status_code=422, roles=ROLES, title="Development sign-in",
                      errors=errors, values={"role": role, "tenant": tenant, "name": name})
    security.sign_in(request, sub=f"dev:{name}"[:100], role=role, tenant=tenant.lower(), name=name,
                     via="development", token=token)
    return RedirectResponse("/", status_code=303)


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    await security.checked_form(request)
    security.sign_out(request)
    return RedirectResponse("/sign-in", status_code=303)
