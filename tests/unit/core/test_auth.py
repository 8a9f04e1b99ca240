"""Issue 12: the token claims (shared/auth.py): what is minted and decoded is always a valid principal."""
from __future__ import annotations

from typing import Any

import pytest

from shared.auth import ClaimError, decode_token, mint_token
from shared.errors import DomainError
from shared.settings import Settings
from tests.helpers import forged_token


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(data_dir=tmp_path)


@pytest.mark.parametrize("tenant", ["croydon", "region", "prov-1", "r", "0d1f6c9e-6f0a-4f1e-8a55-0f1d9b7e2a01",
                                    "a" * 64, "north_east"])
def test_tenants_the_code_uses_are_valid(settings: Settings, tenant: str) -> None:
    assert decode_token(settings, mint_token(settings, "borough", tenant)).tenant == tenant


def test_case_is_normalised_when_minting_and_decoding(settings: Settings) -> None:
    assert decode_token(settings, mint_token(settings, "provider", "0D1F6C9E-6F0A-4F1E-8A55-0F1D9B7E2A01")).tenant \
        == "0d1f6c9e-6f0a-4f1e-8a55-0f1d9b7e2a01"
    principal = decode_token(settings, forged_token(settings, role="BOROUGH", tenant="Croydon"))
    assert (principal.role, principal.tenant, principal.actor) == ("borough", "croydon", "borough:croydon")


@pytest.mark.parametrize(("role", "tenant", "claim", "rule"), [
    ("borough", " croydon ", "tenant", "format"),
    ("borough", "croy don", "tenant", "format"),
    ("borough", "-croydon", "tenant", "format"),
    ("borough", "", "tenant", "format"),
    ("borough", "x" * 65, "tenant", "max_length"),
    ("borough", "x" * 101, "tenant", "max_length"),
    ("borough", "croydon\x00", "tenant", "format"),
    ("mayor", "croydon", "role", "one_of"),
])
def test_mint_token_refuses_a_claim_no_service_accepts(settings: Settings, role: str, tenant: str, claim: str,
                                                       rule: str) -> None:
    with pytest.raises(ClaimError) as refused:
        mint_token(settings, role, tenant)
    assert (refused.value.claim, refused.value.rule) == (claim, rule)
    with pytest.raises(DomainError) as unauthorized:
        decode_token(settings, forged_token(settings, role=role, tenant=tenant))
    assert unauthorized.value.status == 401
    assert (unauthorized.value.field, unauthorized.value.rule) == (f"Authorization.{claim}", rule)
