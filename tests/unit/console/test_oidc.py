"""Sign-in through OpenID Connect: authorization code with PKCE (S256), state and nonce, against a
small provider served over HTTP here (discovery, authorize, token, JWKS; RS256 ID tokens). It stands
in until the Keycloak realm of deploy/keycloak/ is in the tests; the console only reads standard
discovery, so the same code signs in there."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.testclient import TestClient

from services.console.app import create_app
from services.console.security import SESSION_COOKIE
from services.console.settings import ConsoleSettings
from shared.auth import decode_token
from shared.settings import Settings

CLIENT_ID = "placematch-console"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Provider:
    """An OpenID provider for one person: it signs in whoever asks (no login page)."""

    def __init__(self, port: int, claims: dict[str, Any]) -> None:
        self.issuer = f"http://127.0.0.1:{port}"
        self.claims = claims
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.codes: dict[str, dict[str, str]] = {}
        self.token_requests: list[dict[str, str]] = []
        self.refresh_tokens: set[str] = set()
        self.expires_in = 300
        self.app = FastAPI()
        self.app.get("/.well-known/openid-configuration")(self.discovery)
        self.app.get("/authorize")(self.authorize)
        self.app.post("/token")(self.token)
        self.app.get("/jwks")(self.jwks)

    async def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"]}

    async def authorize(self, request: Request) -> Any:
        q = request.query_params
        if (q.get("client_id") != CLIENT_ID or q.get("response_type") != "code"
                or q.get("code_challenge_method") != "S256" or not q.get("code_challenge")):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"challenge": q["code_challenge"], "nonce": q.get("nonce", ""),
                            "redirect_uri": q["redirect_uri"]}
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}")

    async def token(self, grant_type: str = Form(), code: str = Form(""), redirect_uri: str = Form(""),
                    code_verifier: str = Form(""), client_id: str = Form(""), refresh_token: str = Form("")) -> Any:
        self.token_requests.append({"grant_type": grant_type, "code_verifier": code_verifier, "client_id": client_id,
                                    "refresh_token": refresh_token})
        now = int(time.time())
        if grant_type == "refresh_token":
            if refresh_token not in self.refresh_tokens:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            return {"access_token": self.access_token(now), "token_type": "Bearer", "expires_in": self.expires_in}
        grant = self.codes.pop(code, None)
        digest = base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=").decode()
        if grant is None or grant["redirect_uri"] != redirect_uri or digest != grant["challenge"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        id_token = jwt.encode({"iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                               "nonce": grant["nonce"], **self.claims}, self.key, algorithm="RS256",
                              headers={"kid": "k1"})
        refresh = secrets.token_urlsafe(16)
        self.refresh_tokens.add(refresh)
        return {"access_token": self.access_token(now), "id_token": id_token, "token_type": "Bearer",
                "expires_in": self.expires_in, "refresh_token": refresh}

    def access_token(self, now: int) -> str:
        return jwt.encode({"sub": self.claims["sub"], "role": self.claims["role"], "tenant": self.claims["tenant"],
                           "exp": now + 300, "jti": secrets.token_hex(8)}, Settings().jwt_secret, algorithm="HS256")

    async def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}


@contextlib.contextmanager
def served(app: FastAPI, port: int) -> Iterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the OpenID provider did not start"
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


def sign_in_through(provider: Provider, client: TestClient) -> httpx.Response:
    page = client.get("/sign-in")
    assert "Sign in with your organisation" in page.text
    csrf = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    to_provider = client.post("/sign-in/oidc", data={"csrf_token": csrf})
    assert to_provider.status_code in (302, 303, 307)
    authorize = urlsplit(to_provider.headers["location"])
    query = parse_qs(authorize.query)
    assert f"{authorize.scheme}://{authorize.netloc}" == provider.issuer
    assert query["code_challenge_method"] == ["S256"] and query["client_id"] == [CLIENT_ID]
    assert "openid" in query["scope"][0].split()
    back = httpx.get(to_provider.headers["location"])  # the browser at the provider
    assert back.status_code in (302, 307), back.text
    callback = urlsplit(back.headers["location"])
    return client.get(f"{callback.path}?{callback.query}")


@pytest.fixture
def provider_and_console() -> Iterator[tuple[Provider, TestClient]]:
    port = free_port()
    provider = Provider(port, {"sub": "officer-7", "role": "borough", "tenant": "croydon", "name": "Olu Officer"})
    settings = ConsoleSettings(console_oidc_issuer=provider.issuer)
    with served(provider.app, port), TestClient(create_app(settings), base_url="http://testserver",
                                                follow_redirects=False) as client:
        yield provider, client


def test_a_person_signs_in_with_code_and_pkce_and_gets_their_roles_token(
        provider_and_console: tuple[Provider, TestClient]) -> None:
    provider, client = provider_and_console
    done = sign_in_through(provider, client)
    assert done.status_code == 303 and done.headers["location"] == "/", done.text
    assert client.get("/").headers["location"] == "/referrals"
    [request] = provider.token_requests
    assert request["grant_type"] == "authorization_code" and len(request["code_verifier"]) >= 43
    payload = json.loads(base64.b64decode(client.cookies[SESSION_COOKIE].split(".")[0] + "=="))
    assert payload["person"] == {"sub": "officer-7", "role": "borough", "tenant": "croydon", "name": "Olu Officer",
                                 "via": "oidc"}
    assert decode_token(Settings(), payload["token"]).sub == "officer-7"


def test_a_callback_with_another_state_signs_nobody_in(provider_and_console: tuple[Provider, TestClient]) -> None:
    _, client = provider_and_console
    answer = client.get("/auth/callback?code=forged&state=forged")
    assert answer.status_code == 400 and "Sign-in did not complete" in answer.text
    assert client.get("/referrals").headers["location"] == "/sign-in"


def test_an_account_without_a_placematch_role_is_told_so(provider_and_console: tuple[Provider, TestClient]) -> None:
    provider, client = provider_and_console
    provider.claims = {"sub": "someone", "name": "No Role", "role": "janitor", "tenant": "croydon"}
    answer = sign_in_through(provider, client)
    assert answer.status_code == 403 and "no placematch role" in answer.text
    assert client.get("/referrals").headers["location"] == "/sign-in"


def session_of(client: TestClient) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(client.cookies[SESSION_COOKIE].split(".")[0] + "==")))


def test_an_access_token_about_to_expire_is_renewed_with_the_refresh_token(
        provider_and_console: tuple[Provider, TestClient]) -> None:
    provider, client = provider_and_console
    provider.expires_in = 10  # within the console's margin: renewed on the next page
    sign_in_through(provider, client)
    first = session_of(client)["token"]
    assert client.get("/").headers["location"] == "/referrals"
    assert [r["grant_type"] for r in provider.token_requests] == ["authorization_code", "refresh_token"]
    assert provider.token_requests[1]["refresh_token"] in provider.refresh_tokens
    assert session_of(client)["token"] != first
    provider.refresh_tokens.clear()  # the provider ended the session: the console signs the person out
    assert client.get("/").headers["location"] == "/sign-in"
    assert SESSION_COOKIE not in client.cookies  # the emptied session is dropped
