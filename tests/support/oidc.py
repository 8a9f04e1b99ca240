"""A real OpenID Connect provider for tests: Keycloak (deploy/keycloak/keycloak.sh), with the realm
of deploy/keycloak/realm.json, and helpers for its token endpoint and admin REST API.

The session fixture `oidc_provider` (registered in tests/conftest.py) uses, in this order:
1. `PLACEMATCH_TEST_KEYCLOAK` (base URL of a running Keycloak whose admin is admin /
   $KEYCLOAK_ADMIN_PASSWORD): the realm is imported if it is missing;
2. `deploy/keycloak/keycloak.sh start` on a free port in a temporary directory, stopped at the
   session's end (the first run fetches Keycloak from Maven Central; `make test` does that first).
If neither works the test is skipped, or fails under `CI=true`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import jwt
import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYCLOAK_CTL = ROOT / "deploy" / "keycloak" / "keycloak.sh"
REALM_FILE = ROOT / "deploy" / "keycloak" / "realm.json"
REALM = "placematch"
AUDIENCE = "placematch-api"
START_TIMEOUT = float(os.environ.get("KEYCLOAK_START_TIMEOUT", "300"))
ADMIN_PASSWORD = os.environ.get("KEYCLOAK_ADMIN_PASSWORD", "admin")


def password_of(username: str) -> str:
    """The realm's test users have password `<username>-password`."""
    return f"{username}-password"


@dataclass
class Keycloak:
    base: str
    started_in: float | None = None
    """Seconds from `keycloak.sh start` to ready with the realm imported (None: already running)."""
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def issuer(self, realm: str = REALM) -> str:
        return f"{self.base}/realms/{realm}"

    def _token(self, realm: str, data: dict[str, str]) -> str:
        response = self.http.post(f"{self.issuer(realm)}/protocol/openid-connect/token", data=data)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def password_token(self, username: str, client_id: str = "placematch-tests", realm: str = REALM) -> str:
        return self._token(realm, {"grant_type": "password", "client_id": client_id, "username": username,
                                   "password": password_of(username), "scope": "openid"})

    def client_token(self, client_id: str, secret: str, realm: str = REALM) -> str:
        return self._token(realm, {"grant_type": "client_credentials", "client_id": client_id,
                                   "client_secret": secret})

    # --- admin REST API ---------------------------------------------------------------------------

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        token = self._token("master", {"grant_type": "password", "client_id": "admin-cli", "username": "admin",
                                       "password": ADMIN_PASSWORD})
        return self.http.request(method, f"{self.base}/admin/realms{path}",
                                 headers={"Authorization": f"Bearer {token}"}, **kwargs)

    def has_realm(self, realm: str = REALM) -> bool:
        return self.http.get(f"{self.issuer(realm)}/.well-known/openid-configuration").status_code == 200

    def import_realm(self, path: Path = REALM_FILE) -> None:
        response = self.admin("POST", "", json=json.loads(path.read_text()))
        assert response.status_code in (201, 409), response.text

    def user_id(self, username: str) -> str:
        found = self.admin("GET", f"/{REALM}/users", params={"username": username, "exact": "true"}).json()
        assert len(found) == 1, found
        return str(found[0]["id"])

    def set_tenant(self, username: str, tenant: str) -> None:
        """Give a user the `tenant` attribute (what onboarding a provider's staff does)."""
        uid = self.user_id(username)
        user = self.admin("GET", f"/{REALM}/users/{uid}").json()
        user["attributes"] = (user.get("attributes") or {}) | {"tenant": [tenant]}
        response = self.admin("PUT", f"/{REALM}/users/{uid}", json=user)
        assert response.status_code == 204, response.text

    def realm_id(self) -> str:
        return str(self.admin("GET", f"/{REALM}").json()["id"])

    def key_providers(self) -> list[dict[str, Any]]:
        return list(self.admin("GET", f"/{REALM}/components",
                               params={"type": "org.keycloak.keys.KeyProvider"}).json())

    def active_rs256_kid(self) -> str:
        keys = self.admin("GET", f"/{REALM}/keys").json()
        return str(keys["active"]["RS256"])

    def add_rsa_key(self, name: str, private_pem: str, priority: int) -> str:
        """Add a signing key (an `rsa` key provider holding `private_pem`); its component id."""
        response = self.admin("POST", f"/{REALM}/components", json={
            "name": name, "providerId": "rsa", "providerType": "org.keycloak.keys.KeyProvider",
            "parentId": self.realm_id(),
            "config": {"priority": [str(priority)], "enabled": ["true"], "active": ["true"],
                       "algorithm": ["RS256"], "privateKey": [private_pem]}})
        assert response.status_code == 201, response.text
        return response.headers["Location"].rsplit("/", 1)[-1]

    def disable_key_provider(self, component_id: str) -> None:
        component = self.admin("GET", f"/{REALM}/components/{component_id}").json()
        component["config"] = component.get("config", {}) | {"enabled": ["false"], "active": ["false"]}
        response = self.admin("PUT", f"/{REALM}/components/{component_id}", json=component)
        assert response.status_code == 204, response.text

    def published_kids(self) -> set[str]:
        jwks = self.http.get(f"{self.issuer()}/protocol/openid-connect/certs").json()
        return {k["kid"] for k in jwks["keys"] if k.get("use", "sig") == "sig"}


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def sub_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def _unavailable(why: str) -> NoReturn:
    message = f"Keycloak is not available: {why}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: tests that need it fail instead of skipping)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[Keycloak]:
    given = os.environ.get("PLACEMATCH_TEST_KEYCLOAK")
    if given:
        keycloak = Keycloak(given.rstrip("/"))
        try:
            if not keycloak.has_realm():
                keycloak.import_realm()
        except httpx.HTTPError as error:
            _unavailable(f"PLACEMATCH_TEST_KEYCLOAK={given} does not answer: {error}")
        yield keycloak
        return
    if shutil.which("java") is None or shutil.which("curl") is None:
        _unavailable("java and curl are needed to run deploy/keycloak/keycloak.sh")
    run_dir = tempfile.mkdtemp(prefix="placematch-keycloak-")
    started = time.monotonic()
    try:
        result = subprocess.run([str(KEYCLOAK_CTL), "start", "--dir", run_dir], capture_output=True, text=True,
                                timeout=START_TIMEOUT + 600)  # the first run also fetches and imports the realm
    except subprocess.TimeoutExpired:
        result = None
    if result is None or result.returncode != 0:
        subprocess.run([str(KEYCLOAK_CTL), "stop", "--dir", run_dir], capture_output=True, timeout=120)
        shutil.rmtree(run_dir, ignore_errors=True)
        if result is None:
            _unavailable(f"keycloak.sh start did not finish within {START_TIMEOUT + 600:.0f}s")
        else:
            _unavailable("keycloak.sh start failed:\n" + "\n".join(result.stderr.strip().splitlines()[-30:]))
    keycloak = Keycloak(result.stdout.strip().splitlines()[-1], started_in=time.monotonic() - started)
    print(f"\nKeycloak ready at {keycloak.base} in {keycloak.started_in:.1f}s")  # noqa: T201 (measured start)
    try:
        yield keycloak
    finally:
        subprocess.run([str(KEYCLOAK_CTL), "stop", "--dir", run_dir], capture_output=True, timeout=120)
        shutil.rmtree(run_dir, ignore_errors=True)
