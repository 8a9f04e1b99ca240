"""shared/oidc.py against a locally generated JWKS served by a real local HTTP server, and the
person (`actorid`) on events, in the provider history and in the audit pack."""
from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from services.enrolment.app import create_app
from services.referral.audit import build_audit_pack
from shared import oidc
from shared.auth import Principal, decode_token, mint_token
from shared.errors import Forbidden
from shared.events import Envelope
from shared.oidc import ClaimMapping, GroupMapping, IdentityProviderUnavailable, OIDCVerifier, Unauthorized, claim_at
from shared.settings import Settings
from shared.store import read_embedded_people
from shared.testing import service_client
from tests.support.jwks import LocalIssuer, SigningKey

AUD = "placematch-api"


@pytest.fixture
def idp() -> Iterator[LocalIssuer]:
    issuer = LocalIssuer(keys=[SigningKey.rsa(), SigningKey.ec()]).start()
    yield issuer
    issuer.stop()


def verifier(idp: LocalIssuer, **kwargs: Any) -> OIDCVerifier:
    kwargs.setdefault("min_refresh_seconds", 0)
    return OIDCVerifier(issuer=idp.issuer, audience=AUD, **kwargs)


def refused(call: Any, status: int = 401) -> Any:
    with pytest.raises((Unauthorized, Forbidden, IdentityProviderUnavailable)) as caught:
        call()
    assert caught.value.status == status, caught.value.detail
    return caught.value


# --- signatures, keys, algorithms ----------------------------------------------------------------


def test_rs256_and_es256_tokens_from_the_jwks_verify(idp: LocalIssuer) -> None:
    v = verifier(idp)
    rsa_key, ec_key = idp.keys
    who = v.verify(idp.token(rsa_key, sub="u-1", name="Ada Lovelace", preferred_username="ada"))
    assert (who.sub, who.role, who.tenant, who.name, who.username) == ("u-1", "borough", "croydon",
                                                                       "Ada Lovelace", "ada")
    assert v.verify(idp.token(ec_key, sub="u-2", tenant="Sutton")).tenant == "sutton"


def test_the_jwks_url_comes_from_the_discovery_document_and_is_cached(idp: LocalIssuer) -> None:
    v = verifier(idp)
    assert v.jwks_url() == idp.base + "/jwks"
    for _ in range(3):
        v.verify(idp.token())
    assert idp.jwks_fetches == 1


def test_a_key_rotated_in_is_fetched_on_its_unknown_kid(idp: LocalIssuer) -> None:
    v = verifier(idp)
    v.verify(idp.token())
    new = SigningKey.rsa()
    idp.keys = [new]  # the old key is retired, the new one published
    assert v.verify(idp.token(new, sub="after-rotation")).sub == "after-rotation"
    assert idp.jwks_fetches == 2


def test_an_unknown_kid_is_401_and_refetches_at_most_once_per_interval(idp: LocalIssuer) -> None:
    v = verifier(idp, min_refresh_seconds=3600)
    v.verify(idp.token())
    stranger = SigningKey.rsa()
    for _ in range(5):
        error = refused(lambda: v.verify(idp.token(stranger)))
        assert error.rule == "unknown_key"
    assert idp.jwks_fetches == 1  # random kids do not make us hammer the provider


def test_a_token_without_kid_is_401(idp: LocalIssuer) -> None:
    key = idp.keys[0]
    token = jwt.encode({"iss": idp.issuer, "aud": AUD, "sub": "x", "exp": int(time.time()) + 60,
                        "role": "borough", "tenant": "croydon"}, key.private, algorithm="RS256")
    assert refused(lambda: verifier(idp).verify(token)).rule == "unknown_key"


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    return f"{part(header)}.{part(claims)}."


def test_alg_none_is_401(idp: LocalIssuer) -> None:
    claims = {"iss": idp.issuer, "aud": AUD, "sub": "x", "exp": int(time.time()) + 60, "role": "borough",
              "tenant": "croydon"}
    token = _unsigned({"alg": "none", "typ": "JWT", "kid": idp.keys[0].kid}, claims)
    assert refused(lambda: verifier(idp).verify(token)).rule == "algorithm"


def test_hs256_signed_with_the_public_key_is_401(idp: LocalIssuer) -> None:
    key = idp.keys[0]
    pem = key.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = {"iss": idp.issuer, "aud": AUD, "sub": "x", "exp": int(time.time()) + 60, "role": "borough",
              "tenant": "croydon"}
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = _unsigned(header, claims)[:-1]
    import hashlib
    import hmac
    signature = base64.urlsafe_b64encode(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())
    token = f"{signing_input}.{signature.rstrip(b'=').decode()}"
    assert refused(lambda: verifier(idp).verify(token)).rule == "algorithm"


def test_a_kid_of_another_key_type_than_the_alg_is_401(idp: LocalIssuer) -> None:
    rsa_key, ec_key = idp.keys
    # ES256 header naming the RSA key's kid, signed with the EC key
    token = jwt.encode({"iss": idp.issuer, "aud": AUD, "sub": "x", "exp": int(time.time()) + 60},
                       ec_key.private, algorithm="ES256", headers={"kid": rsa_key.kid})
    assert refused(lambda: verifier(idp).verify(token)).rule == "algorithm"


def test_a_token_signed_by_a_key_the_jwks_does_not_hold_but_with_its_kid_is_401(idp: LocalIssuer) -> None:
    impostor = SigningKey.rsa(kid=idp.keys[0].kid)
    refused(lambda: verifier(idp).verify(idp.token(impostor)))


# --- iss, aud, exp, nbf ----------------------------------------------------------------------------


def test_another_issuer_is_401(idp: LocalIssuer) -> None:
    refused(lambda: verifier(idp).verify(idp.token(issuer="https://login.example/other")))


def test_another_audience_is_401(idp: LocalIssuer) -> None:
    refused(lambda: verifier(idp).verify(idp.token(audience="another-api")))


def test_expired_is_401_unless_within_the_leeway(idp: LocalIssuer) -> None:
    recent = idp.token(lifetime=-10)
    assert verifier(idp, leeway=30).verify(recent).tenant == "croydon"
    refused(lambda: verifier(idp, leeway=5).verify(recent))
    refused(lambda: verifier(idp, leeway=30).verify(idp.token(lifetime=-120)))


def test_not_yet_valid_is_401_and_exp_is_required(idp: LocalIssuer) -> None:
    refused(lambda: verifier(idp, leeway=5).verify(idp.token(nbf=int(time.time()) + 120)))
    refused(lambda: verifier(idp).verify(idp.token(exp=None)))


def test_unreachable_provider_is_503_not_401(idp: LocalIssuer) -> None:
    v = verifier(idp)
    idp.stop()
    assert refused(lambda: v.verify(idp.token()), status=503).field == "Authorization"


# --- claim mapping ---------------------------------------------------------------------------------


def test_entra_app_roles_with_a_prefix(idp: LocalIssuer) -> None:
    v = verifier(idp, mapping=ClaimMapping(role_claim="roles", role_prefix="placematch.", tenant_claim="borough"))
    who = v.verify(idp.token(role=None, tenant=None, roles=["Other.Thing", "placematch.Borough"], borough="croydon"))
    assert (who.role, who.tenant) == ("borough", "croydon")
    # an unprefixed known name does not count: it may be another application's role
    error = refused(lambda: v.verify(idp.token(role=None, tenant=None, roles=["borough"], borough="croydon")), 403)
    assert (error.field, error.rule) == ("Authorization.roles", "missing_claim")


def test_keycloak_realm_roles_by_dotted_path(idp: LocalIssuer) -> None:
    v = verifier(idp, mapping=ClaimMapping(role_claim="realm_access.roles", role_prefix="placematch."))
    who = v.verify(idp.token(role=None, realm_access={"roles": ["offline_access", "placematch.auditor"]},
                             tenant="london"))
    assert who.role == "auditor"
    assert claim_at({"a.b": 1, "a": {"b": 2}}, "a.b") == 1


def test_missing_role_or_tenant_is_403_naming_the_claim(idp: LocalIssuer) -> None:
    v = verifier(idp)
    error = refused(lambda: v.verify(idp.token(role=None)), 403)
    assert (error.field, error.rule) == ("Authorization.role", "missing_claim")
    error = refused(lambda: v.verify(idp.token(role="janitor")), 403)
    assert error.field == "Authorization.role"
    error = refused(lambda: v.verify(idp.token(tenant=None)), 403)
    assert (error.field, error.rule) == ("Authorization.tenant", "missing_claim")
    error = refused(lambda: v.verify(idp.token(tenant="Croydon Council!")), 403)
    assert (error.field, error.rule) == ("Authorization.tenant", "format")


def test_several_roles_or_tenants_are_403_ambiguous(idp: LocalIssuer) -> None:
    v = verifier(idp, mapping=ClaimMapping(role_claim="roles"))
    error = refused(lambda: v.verify(idp.token(roles=["borough", "commissioner"])), 403)
    assert (error.field, error.rule) == ("Authorization.roles", "ambiguous")
    error = refused(lambda: verifier(idp).verify(idp.token(tenant=["croydon", "sutton"])), 403)
    assert (error.field, error.rule) == ("Authorization.tenant", "ambiguous")


def test_group_mapping_file_gives_tenant_and_role(idp: LocalIssuer, tmp_path: Path) -> None:
    path = tmp_path / "groups.toml"
    path.write_text('[groups]\n"/boroughs/sutton" = "sutton"\n'
                    '"a1b2c3" = { role = "commissioner", tenant = "london" }\n')
    v = verifier(idp, mapping=ClaimMapping(groups=GroupMapping.load(path)))
    assert v.verify(idp.token(tenant=None, groups=["/staff", "/boroughs/sutton"])).tenant == "sutton"
    who = v.verify(idp.token(role=None, tenant=None, groups=["a1b2c3"]))
    assert (who.role, who.tenant) == ("commissioner", "london")
    error = refused(lambda: v.verify(idp.token(tenant=None, groups=["/staff"])), 403)
    assert error.field == "Authorization.tenant" and "groups" in error.detail
    json_path = tmp_path / "groups.json"
    json_path.write_text(json.dumps({"/boroughs/croydon": "croydon"}))
    assert GroupMapping.load(json_path).groups == {"/boroughs/croydon": {"tenant": "croydon"}}
    bad = tmp_path / "bad.toml"
    bad.write_text('[groups]\nx = { colour = "red" }\n')
    with pytest.raises(ValueError, match="group 'x'"):
        GroupMapping.load(bad)


# --- shared.auth: both kinds of token ----------------------------------------------------------------


def oidc_settings(idp: LocalIssuer, tmp_path: Path, **kwargs: Any) -> Settings:
    return Settings(data_dir=tmp_path, relay_poll_seconds=0.05, oidc_issuer=idp.issuer, oidc_audience=AUD,
                    oidc_jwks_min_refresh_seconds=0, **kwargs)


def test_decode_token_takes_both_the_providers_and_placematch_tokens(idp: LocalIssuer, tmp_path: Path) -> None:
    settings = oidc_settings(idp, tmp_path)
    assert decode_token(settings, idp.token(sub="officer-7")) == Principal("officer-7", "borough", "croydon")
    assert decode_token(settings, mint_token(settings, "auditor", "london")).actor == "auditor:london"
    # an HS256 token claiming the provider's issuer is checked by the provider's rules: refused
    forged = jwt.encode({"iss": idp.issuer, "aud": AUD, "sub": "x", "exp": int(time.time()) + 60,
                         "role": "commissioner", "tenant": "london"}, settings.jwt_secret, algorithm="HS256")
    with pytest.raises(Unauthorized):
        decode_token(settings, forged)


def test_local_tokens_can_be_switched_off(idp: LocalIssuer, tmp_path: Path) -> None:
    settings = oidc_settings(idp, tmp_path, local_tokens_enabled=False)
    with pytest.raises(Unauthorized):
        decode_token(settings, mint_token(settings, "auditor", "london"))
    assert decode_token(settings, idp.token()).role == "borough"


def test_one_verifier_per_configuration_keeps_its_key_cache(idp: LocalIssuer, tmp_path: Path) -> None:
    settings = oidc_settings(idp, tmp_path)
    assert oidc.verifier_for(settings) is oidc.verifier_for(oidc_settings(idp, tmp_path))
    assert oidc.verifier_for(Settings(data_dir=tmp_path)) is None
    with pytest.raises(ValueError, match="AUDIENCE"):
        oidc.verifier_for(Settings(data_dir=tmp_path, oidc_issuer=idp.issuer))


# --- the person on every event --------------------------------------------------------------------------


def test_actorid_is_a_cloudevents_extension_on_the_wire() -> None:
    envelope = Envelope(type="provider-applied", subject="p", data={}, source="placematch/enrolment",
                        actor="provider:p", actorid="user-1")
    assert envelope.to_dict()["actorid"] == "user-1"
    assert Envelope.from_json(envelope.to_json()).actorid == "user-1"
    message = envelope.to_kafka()
    key = message.key if isinstance(message.key, bytes) else None
    assert Envelope.from_kafka(message.value, dict(message.headers), key).actorid == "user-1"
    assert "actorid" not in Envelope(type="t", subject="s", data={}, source="x").to_dict()


@pytest.fixture
async def enrolment(idp: LocalIssuer, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(create_app(oidc_settings(idp, tmp_path))) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


GOOD = {"framework": "ofsted_legacy", "overall": "good", "inspected_on": "2024-03-01"}
APPLICATION = {"name": "Riverside School", "urn": "100001", "kind": "independent_special_school",
               "lots": ["ASD"], "age_min": 5, "age_max": 19, "genders": ["female", "male"],
               "placement_types": ["day"], "capacity": 4,
               "location": {"postcode": "SE1 7PB", "lat": 51.501, "lon": -0.115},
               "boroughs_served": ["croydon"], "contact_email": "admissions@riverside.example"}


async def test_history_names_who_did_what(idp: LocalIssuer, enrolment: httpx.AsyncClient, tmp_path: Path) -> None:
    pid = (await enrolment.post("/providers", json=APPLICATION)).json()["id"]
    officer = bearer(idp.token(sub="k-officer", role="commissioner", tenant="london", name="Grace Hopper",
                               preferred_username="ghopper"))
    assert (await enrolment.post(f"/providers/{pid}/inspections", json=GOOD, headers=officer)).status_code == 200
    assert (await enrolment.post(f"/providers/{pid}/approve", headers=officer)).status_code == 200
    for sub, name, capacity in (("k-alice", "Alice Staff", 5), ("k-bob", "Bob Staff", 6)):
        staff = bearer(idp.token(sub=sub, role="provider", tenant=pid, name=name))
        response = await enrolment.patch(f"/providers/{pid}", json={"capacity": capacity}, headers=staff)
        assert response.status_code == 200, response.text

    history = (await enrolment.get(f"/providers/{pid}/history", headers=officer)).json()
    by_type = [(e["type"], e.get("actorid"), e["actor"]) for e in history["events"]]
    assert by_type[0] == ("provider-applied", None, f"provider:{pid}")  # anonymous application
    assert ("provider-approved", "k-officer", "commissioner:london") in by_type
    assert [(a, b) for t, a, b in by_type if t == "provider-updated"] == [
        ("k-alice", f"provider:{pid}"), ("k-bob", f"provider:{pid}")]
    assert all("name" not in e and "Grace" not in json.dumps(e) for e in history["events"])  # never in events
    assert history["people"]["k-officer"] == {"actor": "commissioner:london", "name": "Grace Hopper",
                                              "username": "ghopper"}
    assert history["people"]["k-bob"]["name"] == "Bob Staff"

    # the provider's own staff see each other's names, not the commissioner's officer's
    mine = (await enrolment.get(f"/providers/{pid}/history",
                                headers=bearer(idp.token(sub="k-alice", role="provider", tenant=pid)))).json()
    assert set(mine["people"]) == {"k-alice", "k-bob"}
    # what `placematch audit referral` reads beside the events
    people = await read_embedded_people(tmp_path, ["enrolment", "referral"])
    assert people["k-alice"]["name"] == "Alice Staff" and set(people) == {"k-officer", "k-alice", "k-bob"}


async def test_api_refuses_bad_tokens_with_problem_json(idp: LocalIssuer, enrolment: httpx.AsyncClient) -> None:
    pid = (await enrolment.post("/providers", json=APPLICATION)).json()["id"]
    cases = {
        "unmapped role": (idp.token(role=None, tenant="london"), 403, "Authorization.role"),
        "unmapped tenant": (idp.token(role="commissioner", tenant=None), 403, "Authorization.tenant"),
        "other audience": (idp.token(role="commissioner", tenant="london", audience="x"), 401, "Authorization"),
        "expired": (idp.token(role="commissioner", tenant="london", lifetime=-600), 401, "Authorization"),
        "unknown key": (idp.token(SigningKey.rsa(), role="commissioner", tenant="london"), 401, "Authorization"),
    }
    for name, (token, status, field) in cases.items():
        response = await enrolment.post(f"/providers/{pid}/approve", headers=bearer(token))
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), name
        assert response.json()["field"] == field, name
    history = (await enrolment.get(f"/providers/{pid}/history",
                                   headers=bearer(idp.token(role="auditor", tenant="london")))).json()
    assert [e["type"] for e in history["events"]] == ["provider-applied"]  # nothing changed


def test_audit_pack_names_the_person_behind_each_step() -> None:
    raised = Envelope(type="referral-raised", subject="r1", source="placematch/referral", actor="borough:croydon",
                      actorid="k-officer", data={"borough": "croydon", "primary_need": "ASD"})
    offer = Envelope(type="offer-submitted", subject="r1", source="placematch/referral", actor="provider:p1",
                     actorid="k-alice", data={"offer_id": "o1", "provider_id": "p1", "weekly_fee_pence": 100})
    pack = build_audit_pack("r1", [raised, offer], {"k-alice": {"actor": "provider:p1", "name": "Alice Staff",
                                                                "username": "alice"}})
    assert pack["offers"][0]["by"] == {"sub": "k-alice", "name": "Alice Staff", "username": "alice"}
    assert pack["raised"]["actorid"] == "k-officer" and pack["raised"]["by"]["name"] is None
