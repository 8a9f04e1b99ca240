"""Council sign-on against a real OpenID Connect provider: Keycloak (deploy/keycloak), its realm
with a user or client for each role, tokens by the password and client-credentials grants driving
the enrolment and referral APIs, a signing-key rotation mid-test, and the tokens that must fail.

Run: deploy/test-env.sh .venv/bin/pytest -q tests/integration/test_oidc_keycloak.py
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.enrolment.app import create_app as enrolment_app
from services.referral.app import create_app as referral_app
from shared.settings import Settings
from shared.testing import auth, service_client
from tests.support.oidc import AUDIENCE, Keycloak, kid_of, sub_of
from tests.unit.referral.test_api import Harness, offer_body, referral_body

GOOD = {"framework": "ofsted_legacy", "overall": "good", "inspected_on": "2024-03-01"}
APPLICATION = {"name": "Riverside School", "urn": "100001", "kind": "independent_special_school",
               "lots": ["ASD"], "age_min": 5, "age_max": 19, "genders": ["female", "male"],
               "placement_types": ["day"], "capacity": 4,
               "location": {"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115},
               "boroughs_served": ["croydon"], "contact_email": "admissions@riverside.example"}
PROBLEM = "application/problem+json"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def settings(oidc_provider: Keycloak, tmp_path: Path) -> Settings:
    """How a partnership on Keycloak configures placematch: realm roles `placematch.<role>`, the
    tenant from a user attribute, or from a group through the mapping file."""
    groups = tmp_path / "groups.toml"
    groups.write_text('[groups]\n"/boroughs/sutton" = "sutton"\n"/boroughs/croydon" = "croydon"\n')
    return Settings(data_dir=tmp_path, relay_poll_seconds=0.05, consumer_retry_base_seconds=0.01,
                    deadline_check_seconds=0.1,
                    oidc_issuer=oidc_provider.issuer(), oidc_audience=AUDIENCE,
                    oidc_role_claim="realm_access.roles", oidc_role_prefix="placematch.",
                    oidc_tenant_claim="tenant", oidc_groups_claim="groups", oidc_group_map=groups,
                    oidc_leeway_seconds=5, oidc_jwks_min_refresh_seconds=0)


@pytest.fixture
async def enrolment(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(enrolment_app(settings)) as client:
        yield client


@pytest.fixture
async def referral(settings: Settings) -> AsyncIterator[Harness]:
    app = referral_app(settings)
    async with service_client(app) as client:
        await app.state.runtime.consumers_ready()
        yield Harness(app, client, settings)


async def approved_provider(enrolment: httpx.AsyncClient, commissioner: dict[str, str]) -> str:
    response = await enrolment.post("/providers", json=APPLICATION | {"urn": str(100000 + uuid.uuid4().int % 899999)})
    assert response.status_code == 201, response.text
    pid = str(response.json()["id"])
    assert (await enrolment.post(f"/providers/{pid}/inspections", json=GOOD, headers=commissioner)).status_code == 200
    assert (await enrolment.post(f"/providers/{pid}/approve", headers=commissioner)).status_code == 200
    return pid


# --- every role, both grants ------------------------------------------------------------------------


async def test_password_and_client_credentials_tokens_drive_enrolment(
        oidc_provider: Keycloak, enrolment: httpx.AsyncClient) -> None:
    officer = oidc_provider.password_token("commissioner")
    pid = await approved_provider(enrolment, bearer(officer))
    # the partnership's commissioning system, by client credentials, suspends and reinstates
    system = oidc_provider.client_token("commissioner-system", "commissioner-system-secret")
    response = await enrolment.post(f"/providers/{pid}/suspend", json={"reason": "safeguarding review"},
                                    headers=bearer(system))
    assert response.status_code == 200, response.text
    assert (await enrolment.post(f"/providers/{pid}/reinstate", headers=bearer(officer))).status_code == 200

    # two members of the provider's staff, onboarded with the provider's id as their tenant
    for username in ("provider-alice", "provider-bob"):
        oidc_provider.set_tenant(username, pid)
    alice, bob = oidc_provider.password_token("provider-alice"), oidc_provider.password_token("provider-bob")
    for token, capacity in ((alice, 5), (bob, 6)):
        response = await enrolment.patch(f"/providers/{pid}", json={"capacity": capacity}, headers=bearer(token))
        assert response.status_code == 200, response.text
    # a provider's staff may not act as the commissioner
    response = await enrolment.post(f"/providers/{pid}/suspend", json={"reason": "x"}, headers=bearer(alice))
    assert response.status_code == 403

    auditor = oidc_provider.password_token("auditor")
    history = (await enrolment.get(f"/providers/{pid}/history", headers=bearer(auditor))).json()
    who = [(e["type"], e.get("actorid")) for e in history["events"]]
    assert ("provider-approved", sub_of(officer)) in who
    assert ("provider-suspended", sub_of(system)) in who
    assert [a for t, a in who if t == "provider-updated"] == [sub_of(alice), sub_of(bob)]
    assert history["people"][sub_of(officer)]["name"] == "Chidi Nwosu"
    assert history["people"][sub_of(alice)] == {"actor": f"provider:{pid}", "name": "Alice Staff",
                                                "username": "provider-alice"}
    assert "Chidi" not in json.dumps(history["events"])  # names stay out of the events


async def test_boroughs_by_attribute_group_and_client_credentials_on_referral(
        oidc_provider: Keycloak, referral: Harness) -> None:
    croydon = oidc_provider.password_token("croydon-officer")
    raised = await referral.client.post("/referrals", json=referral_body(), headers=bearer(croydon))
    assert raised.status_code == 201, raised.text
    rid = raised.json()["id"]
    system = oidc_provider.client_token("croydon-system", "croydon-system-secret")
    assert (await referral.client.get(f"/referrals/{rid}", headers=bearer(system))).status_code == 200
    # sutton's officer, whose tenant comes from the group mapping, does not see croydon's referral
    sutton = oidc_provider.password_token("sutton-officer")
    assert (await referral.client.get(f"/referrals/{rid}", headers=bearer(sutton))).status_code == 404
    listed = (await referral.client.get("/referrals", headers=bearer(sutton))).json()
    assert rid not in json.dumps(listed)
    mine = await referral.client.post("/referrals", json=referral_body(), headers=bearer(sutton))
    assert mine.status_code == 201 and mine.json()["borough"] == "sutton"


async def test_offers_record_which_staff_member_made_them(oidc_provider: Keycloak, referral: Harness) -> None:
    pid = str(uuid.uuid4())
    for username in ("provider-alice", "provider-bob"):
        oidc_provider.set_tenant(username, pid)
    croydon = oidc_provider.password_token("croydon-officer")
    rid = (await referral.client.post("/referrals", json=referral_body(), headers=bearer(croydon))).json()["id"]
    await referral.invite(rid, pid)
    alice, bob = oidc_provider.password_token("provider-alice"), oidc_provider.password_token("provider-bob")
    first = await referral.client.post(f"/referrals/{rid}/offers", json=offer_body(), headers=bearer(alice))
    assert first.status_code == 201, first.text
    withdrawn = await referral.client.post(f"/referrals/{rid}/offers/{first.json()['id']}/withdraw",
                                           json={"reason": "fee revised"}, headers=bearer(bob))
    assert withdrawn.status_code == 200, withdrawn.text
    second = await referral.client.post(f"/referrals/{rid}/offers", json=offer_body(weekly_fee_pence=410000),
                                        headers=bearer(bob))
    assert second.status_code == 201, second.text
    assert (first.json()["submitted_by"], withdrawn.json()["withdrawn_by"]) == (sub_of(alice), sub_of(bob))
    # the offers name the staff member who made each (the `sub`; names only in the audit pack)
    expected = {first.json()["id"]: (sub_of(alice), sub_of(bob)), second.json()["id"]: (sub_of(bob), None)}
    for token in (croydon, alice, bob):
        listed = await referral.client.get(f"/referrals/{rid}/offers", headers=bearer(token))
        assert listed.status_code == 200, listed.text
        assert {o["id"]: (o["submitted_by"], o["withdrawn_by"]) for o in listed.json()["offers"]} == expected
        assert "Alice Staff" not in listed.text and "Bob Staff" not in listed.text

    pack = (await referral.client.get(f"/referrals/{rid}/audit",
                                      headers=bearer(oidc_provider.password_token("auditor")))).json()
    made = [(s["type"], s["by"]["name"], s["actor"]) for s in pack["offers"]]
    assert sorted(made) == sorted([("offer-submitted", "Alice Staff", f"provider:{pid}"),
                                   ("offer-submitted", "Bob Staff", f"provider:{pid}"),
                                   ("offer-withdrawn", "Bob Staff", f"provider:{pid}")])
    assert pack["raised"]["by"] == {"sub": sub_of(croydon), "name": "Olu Adeyemi", "username": "croydon-officer"}
    events = await referral.runtime.store.read_stream(rid)
    assert {e.actorid for e in events} == {sub_of(croydon), sub_of(alice), sub_of(bob)}
    assert not any("Alice" in e.to_json().decode() for e in events)
    # placematch's own tokens keep working beside the provider's (embedded run, scripts)
    local = await referral.client.get(f"/referrals/{rid}", headers=auth(referral.settings, "borough", "croydon"))
    assert local.status_code == 200


# --- key rotation ----------------------------------------------------------------------------------------


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def rotated(oidc_provider: Keycloak) -> dict[str, Any]:
    """The realm's signing key, rotated: a new RSA key of higher priority, the generated one disabled.
    Returns the new key (its private half is ours, so the tests below can sign with a key the realm
    really publishes) and the kids before and after."""
    before = oidc_provider.password_token("croydon-officer")
    old_kid = kid_of(before)
    key = rsa.generate_private_key(65537, 2048)
    component = oidc_provider.add_rsa_key(f"rotated-{uuid.uuid4().hex[:6]}", _pem(key), priority=1000)
    for provider in oidc_provider.key_providers():
        if provider["providerId"] in ("rsa-generated", "rsa") and provider["id"] != component:
            oidc_provider.disable_key_provider(provider["id"])
    new_kid = oidc_provider.active_rs256_kid()
    assert new_kid != old_kid and old_kid not in oidc_provider.published_kids()
    return {"key": key, "kid": new_kid, "old_kid": old_kid, "token_before": before}


async def test_requests_keep_working_across_a_signing_key_rotation(
        oidc_provider: Keycloak, settings: Settings) -> None:
    async with service_client(referral_app(settings)) as client:
        before = oidc_provider.password_token("croydon-officer")
        assert (await client.get("/referrals", headers=bearer(before))).status_code == 200  # JWKS fetched, cached
        key = rsa.generate_private_key(65537, 2048)
        component = oidc_provider.add_rsa_key(f"rotation-{uuid.uuid4().hex[:6]}", _pem(key), priority=2000)
        for provider in oidc_provider.key_providers():
            if provider["providerId"] in ("rsa-generated", "rsa") and provider["id"] != component \
                    and provider.get("config", {}).get("enabled", ["true"]) != ["false"]:
                oidc_provider.disable_key_provider(provider["id"])
        after = oidc_provider.password_token("croydon-officer")
        assert kid_of(after) != kid_of(before)
        assert kid_of(before) not in oidc_provider.published_kids()
        for _ in range(3):  # the unknown kid makes the service fetch the JWKS again, once
            response = await client.post("/referrals", json=referral_body(), headers=bearer(after))
            assert response.status_code == 201, response.text
        # the retired key, no longer published, no longer opens the door
        assert (await client.get("/referrals", headers=bearer(before))).status_code == 401


# --- tokens that must fail ------------------------------------------------------------------------------


def _b64(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


async def test_tokens_that_must_be_refused(oidc_provider: Keycloak, rotated: dict[str, Any],
                                           enrolment: httpx.AsyncClient) -> None:
    pid = await approved_provider(enrolment, bearer(oidc_provider.password_token("commissioner")))
    issuer, key, kid = oidc_provider.issuer(), rotated["key"], rotated["kid"]
    now = int(time.time())

    def signed(lifetime: int = 300, **claims: Any) -> str:
        body = {"iss": issuer, "aud": AUDIENCE, "sub": "minted", "iat": now, "exp": now + lifetime,
                "realm_access": {"roles": ["placematch.commissioner"]}, "tenant": "london"} | claims
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})

    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = {"iss": issuer, "aud": AUDIENCE, "sub": "x", "exp": now + 300,
              "realm_access": {"roles": ["placematch.commissioner"]}, "tenant": "london"}
    hs_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_b64(claims)}"
    hs_signature = base64.urlsafe_b64encode(hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest())
    stranger = rsa.generate_private_key(65537, 2048)

    # control: a token signed with the realm's published key is accepted, so each refusal below is for its reason
    control = await enrolment.get(f"/providers/{pid}", headers=bearer(signed()))
    assert control.status_code == 200, control.text
    cases: dict[str, tuple[str, int, str]] = {
        "another issuer (the master realm)": (oidc_provider._token("master", {
            "grant_type": "password", "client_id": "admin-cli", "username": "admin",
            "password": "admin"}), 401, "Authorization"),
        "another audience (other-app)": (oidc_provider.password_token("commissioner", client_id="other-app"),
                                         401, "Authorization"),
        "expired": (signed(lifetime=-120), 401, "Authorization"),
        "not yet valid": (signed(nbf=now + 600), 401, "Authorization"),
        "unknown key": (jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "no-such-key"}),
                        401, "Authorization"),
        "right kid, wrong key": (jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": kid}),
                                 401, "Authorization"),
        "alg none": (f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_b64(claims)}.", 401, "Authorization"),
        "HS256 keyed with the public key": (f"{hs_input}.{hs_signature.rstrip(b'=').decode()}", 401,
                                            "Authorization"),
        "no placematch role (user no-role)": (oidc_provider.password_token("no-role"), 403,
                                              "Authorization.realm_access.roles"),
        "no tenant (user no-tenant)": (oidc_provider.password_token("no-tenant"), 403, "Authorization.tenant"),
    }
    for name, (token, status, field) in cases.items():
        response = await enrolment.post(f"/providers/{pid}/suspend", json={"reason": "must not happen"},
                                        headers=bearer(token))
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"].startswith(PROBLEM), name
        assert response.json()["field"] == field, (name, response.json())
    auditor = bearer(oidc_provider.password_token("auditor"))
    provider = (await enrolment.get(f"/providers/{pid}", headers=auditor)).json()
    assert provider["status"] == "approved"  # nothing was suspended


def test_discovery_document_names_the_realms_jwks(oidc_provider: Keycloak) -> None:
    from shared.oidc import OIDCVerifier

    verifier = OIDCVerifier(issuer=oidc_provider.issuer(), audience=AUDIENCE)
    assert verifier.jwks_url() == f"{oidc_provider.issuer()}/protocol/openid-connect/certs"
    if oidc_provider.started_in is not None:
        print(f"Keycloak started and imported the realm in {oidc_provider.started_in:.1f}s")  # noqa: T201


# --- the console's client: authorization code with PKCE, loopback redirect on any port ------------------


def test_console_client_signs_in_with_pkce_on_a_loopback_port(oidc_provider: Keycloak) -> None:
    import re
    import secrets
    from html import unescape

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect = "http://127.0.0.1:43123/callback"
    auth_url = f"{oidc_provider.issuer()}/protocol/openid-connect/auth"
    params = {"client_id": "placematch-console", "redirect_uri": redirect, "response_type": "code",
              "scope": "openid", "state": "s-1", "code_challenge": challenge, "code_challenge_method": "S256"}
    with httpx.Client(timeout=60, follow_redirects=False) as browser:
        # another host is not a registered redirect; no PKCE is refused
        assert browser.get(auth_url, params=params | {"redirect_uri": "http://evil.example/cb"}).status_code == 400
        no_pkce = browser.get(auth_url, params={k: v for k, v in params.items() if not k.startswith("code_")})
        assert "code_challenge" in unescape(no_pkce.headers.get("location", "") + no_pkce.text)
        page = browser.get(auth_url, params=params)
        assert page.status_code == 200, page.text[:300]
        action = unescape(re.search(r'<form[^>]+action="([^"]+)"', page.text)[1])  # type: ignore[index]
        # Keycloak's session cookies are Secure: a browser sends them to http://127.0.0.1 (a secure
        # context), httpx's cookie jar does not, so they are carried over by hand
        cookies = "; ".join(c.split(";", 1)[0] for c in page.headers.get_list("set-cookie"))
        login = browser.post(action, data={"username": "croydon-officer", "password": "croydon-officer-password"},
                             headers={"Cookie": cookies})
        assert login.status_code == 302, login.text[:300]
        location = httpx.URL(login.headers["location"])
        assert str(location).startswith(redirect) and location.params["state"] == "s-1"
        token = browser.post(f"{oidc_provider.issuer()}/protocol/openid-connect/token", data={
            "grant_type": "authorization_code", "client_id": "placematch-console", "code": location.params["code"],
            "redirect_uri": redirect, "code_verifier": verifier})
        assert token.status_code == 200, token.text
    claims = jwt.decode(token.json()["access_token"], options={"verify_signature": False})
    assert claims["aud"] == AUDIENCE and claims["tenant"] == "croydon" and claims["azp"] == "placematch-console"
    from shared.oidc import ClaimMapping, OIDCVerifier

    who = OIDCVerifier(issuer=oidc_provider.issuer(), audience=AUDIENCE, min_refresh_seconds=0,
                       mapping=ClaimMapping(role_claim="realm_access.roles", role_prefix="placematch.")
                       ).verify(token.json()["access_token"])
    assert (who.role, who.tenant, who.name) == ("borough", "croydon", "Olu Adeyemi")
