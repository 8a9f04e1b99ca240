"""Signing in to the console through a real OpenID provider: Keycloak with the realm of
deploy/keycloak/ (issue 17), its `placematch-console` public client (authorization code + PKCE),
in Chromium. The officer types their password on Keycloak's own page, comes back signed in, and
the services accept the token the console got for them (the borough's referral list loads).

Needs the `oidc_provider` fixture (tests/support/oidc.py): a real Keycloak."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.stack import Stack
from tests.support import oidc


@pytest.fixture(scope="module")
def keycloak_stack(oidc_provider: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from tests.browser.conftest import _missing

    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("console-keycloak")
    groups = root / "groups.toml"
    groups.write_text('[groups]\n"/boroughs/sutton" = "sutton"\n"/boroughs/croydon" = "croydon"\n')
    stack = Stack(root / "var", dev_sign_in=False, oidc_issuer=oidc_provider.issuer(), oidc_audience=oidc.AUDIENCE,
                  oidc_role_claim="realm_access.roles", oidc_role_prefix="placematch.", oidc_tenant_claim="tenant",
                  oidc_groups_claim="groups", oidc_group_map=groups, oidc_leeway_seconds=5)
    stack.data_dir.mkdir(parents=True)
    stack.start()
    yield stack
    stack.stop()


def test_an_officer_signs_in_with_keycloak_and_the_services_accept_the_token(
        keycloak_stack: Stack, browser: Any) -> None:
    from playwright.sync_api import expect

    from tests.browser.test_console import look

    page = browser.new_context().new_page()
    page.set_default_timeout(30_000)
    page.goto(keycloak_stack.url("console") + "/")
    assert "development sign-in" not in page.content().lower()
    page.get_by_role("button", name="Sign in with your organisation's account").click()
    page.wait_for_url("**/realms/placematch/**")
    page.locator("#username").fill("croydon-officer")
    page.locator("#password").fill(oidc.password_of("croydon-officer"))
    page.locator("#kc-login").click()
    expect(page.get_by_text("Signed in as")).to_be_visible()
    expect(page.locator(".pm-signed-in")).to_contain_text("borough, croydon")
    expect(page.get_by_role("heading", name="My referrals")).to_be_visible()  # the referral API took the token
    look(page, "20-keycloak-signed-in")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to the commissioning console")).to_be_visible()
    page.goto(keycloak_stack.url("console") + "/referrals")
    assert Path(page.url).name == "sign-in"
