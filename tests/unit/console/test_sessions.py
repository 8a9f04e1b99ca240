"""Sessions and CSRF of the console: cookies, tokens on every form, development sign-in."""
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.datastructures import FormData
from starlette.testclient import TestClient

from services.console import forms
from services.console.app import create_app
from services.console.security import SESSION_COOKIE, csrf_matches
from services.console.settings import ConsoleSettings
from shared.auth import decode_token

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def settings(**changes: object) -> ConsoleSettings:
    # services at addresses nothing listens on (port 1): the pages here need none but to fail politely
    unreachable = {f"console_{s}_url": "http://127.0.0.1:1"
                   for s in ("enrolment", "referral", "matching", "notification")}
    return ConsoleSettings(console_dev_sign_in=True, **unreachable, **changes)  # type: ignore[arg-type]


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(settings()), follow_redirects=False) as client:
        yield client


def csrf_of(client: TestClient, path: str = "/dev-sign-in") -> str:
    match = CSRF.search(client.get(path).text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def test_csrf_matches_only_the_sessions_own_token() -> None:
    token = "t" * 43
    assert csrf_matches({"csrf": token}, token)
    assert not csrf_matches({"csrf": token}, "u" * 43)
    assert not csrf_matches({"csrf": token}, None)
    assert not csrf_matches({}, token)
    assert not csrf_matches({"csrf": "short"}, "short")


def test_the_session_cookie_is_httponly_and_samesite_lax_and_secure_over_https(client: TestClient) -> None:
    cookie = client.get("/dev-sign-in").headers["set-cookie"].lower()
    assert cookie.startswith(SESSION_COOKIE) and "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie
    with TestClient(create_app(settings(console_oidc_redirect_uri="https://console.example/auth/callback"))) as tls:
        assert "; secure" in tls.get("/dev-sign-in").headers["set-cookie"].lower()


def test_a_form_without_or_with_another_csrf_token_is_refused_and_changes_nothing(client: TestClient) -> None:
    csrf_of(client)
    for data in ({"role": "borough", "tenant": "croydon"}, {"role": "borough", "tenant": "croydon",
                                                            "csrf_token": "x" * 43}):
        refused = client.post("/dev-sign-in", data=data)
        assert refused.status_code == 403 and "The form has expired" in refused.text
    assert client.get("/referrals").headers["location"] == "/sign-in"


def test_development_sign_in_mints_a_token_the_services_accept_and_renews_the_session(client: TestClient) -> None:
    before = csrf_of(client)
    signed = client.post("/dev-sign-in", data={"csrf_token": before, "role": "provider", "tenant": "Riverside-1",
                                               "name": "Priya"})
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    assert client.get("/").headers["location"] == "/invitations"
    after = csrf_of(client, "/sign-in")
    assert after != before  # nothing from before the sign-in is carried over
    import base64
    import json

    cookie = client.cookies[SESSION_COOKIE]
    payload = json.loads(base64.b64decode(cookie.split(".")[0] + "=="))
    principal = decode_token(settings(), payload["token"])
    assert (principal.role, principal.tenant, principal.sub) == ("provider", "riverside-1", "dev:Priya")


def test_signing_out_needs_the_csrf_token_and_ends_the_session(client: TestClient) -> None:
    client.post("/dev-sign-in", data={"csrf_token": csrf_of(client), "role": "borough", "tenant": "croydon"})
    assert client.post("/sign-out", data={}).status_code == 403
    token = csrf_of(client, "/sign-in")
    assert client.post("/sign-out", data={"csrf_token": token}).headers["location"] == "/sign-in"
    assert client.get("/referrals").headers["location"] == "/sign-in"


def test_a_tampered_session_cookie_signs_nobody_in(client: TestClient) -> None:
    client.post("/dev-sign-in", data={"csrf_token": csrf_of(client), "role": "borough", "tenant": "croydon"})
    value = client.cookies[SESSION_COOKIE]
    client.cookies.set(SESSION_COOKIE, value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB"))
    assert client.get("/referrals").headers["location"] == "/sign-in"


def test_a_page_of_another_role_is_refused(client: TestClient) -> None:
    client.post("/dev-sign-in", data={"csrf_token": csrf_of(client), "role": "borough", "tenant": "croydon"})
    refused = client.get("/applications")
    assert refused.status_code == 403 and "for commissioner accounts" in refused.text


def test_a_tenant_no_service_accepts_is_shown_on_its_field(client: TestClient) -> None:
    answer = client.post("/dev-sign-in", data={"csrf_token": csrf_of(client), "role": "borough", "tenant": "Croy don!"})
    assert answer.status_code == 422
    assert 'href="#tenant"' in answer.text and 'id="tenant-error"' in answer.text


def test_the_development_sign_in_is_off_unless_enabled() -> None:
    with TestClient(create_app(ConsoleSettings()), follow_redirects=False) as client:
        assert client.get("/dev-sign-in").status_code == 404
        assert client.post("/dev-sign-in", data={"role": "commissioner", "tenant": "region"}).status_code == 404
        assert "development sign-in" not in client.get("/sign-in").text.lower()
        assert client.get("/health").json() == {"status": "ok", "service": "console"}


def test_an_unreachable_service_is_a_page_saying_so_not_a_500(client: TestClient) -> None:
    client.post("/dev-sign-in", data={"csrf_token": csrf_of(client), "role": "borough", "tenant": "croydon"})
    answer = client.get("/referrals")
    assert answer.status_code == 502 and "could not be reached" in answer.text


def test_the_referral_form_is_typed_here_and_judged_by_the_api() -> None:
    form = FormData([("child_ref", " CR-1 "), ("max_travel_km", "thirty"), ("secondary_needs", "SLCN"),
                     ("offer_deadline", "2027-07-01"), ("outcomes", "One\n\n Two "), ("location.postcode", "CR0 1NX"),
                     *((f"needs_profile.{i}", "1") for i in forms.INDICATOR_LABELS if i != "voice")])
    body, errors = forms.referral_body(form)
    assert errors == {"max_travel_km": "Maximum travel must be a whole number",
                      "needs_profile.voice": "Select a rating for voice (being heard)"}
    assert body["child_ref"] == "CR-1" and body["offer_deadline"] == "2027-07-01T17:00:00Z"
    assert body["outcomes"] == ["One", "Two"] and body["secondary_needs"] == ["SLCN"]
    assert body["location"] == {"postcode": "CR0 1NX", "lat": None, "lon": None}
    before = {"child_ref": "CR-1", "location": {"postcode": "CR0 1NX", "lat": None, "lon": None, "district": "Croydon"}}
    assert forms.changes(before, {"child_ref": "CR-1", "location": body["location"], "gender": "male"}) == {
        "gender": "male"}


def test_the_same_form_sent_twice_is_one_request_and_a_changed_one_is_another() -> None:
    import httpx

    from services.console.client import Api

    api = Api(settings(), httpx.AsyncClient(), "token", form_id="f-1")
    body = {"weekly_fee_pence": 425000, "start_date": "2027-09-01"}
    key = api.idempotency_key("POST", "http://x/referrals/r/offers", body)
    assert key == api.idempotency_key("POST", "http://x/referrals/r/offers", dict(reversed(body.items())))
    assert key != api.idempotency_key("POST", "http://x/referrals/r/offers", {**body, "weekly_fee_pence": 1})
    assert key != Api(settings(), httpx.AsyncClient(), "token", form_id="f-2").idempotency_key(
        "POST", "http://x/referrals/r/offers", body)
    unkeyed = Api(settings(), httpx.AsyncClient(), "token")
    assert unkeyed.idempotency_key("POST", "u", body) != unkeyed.idempotency_key("POST", "u", body)


def test_plain_settings_are_completed_with_the_console_ones_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import Settings

    monkeypatch.setenv("PLACEMATCH_CONSOLE_DEV_SIGN_IN", "true")
    app = create_app(Settings(base_port=9100))
    assert app.state.settings.console_dev_sign_in is True
    assert app.state.settings.console_listen_port == 9106
    assert app.state.settings.service_url("matching") == "http://127.0.0.1:9103"


def test_pages_are_not_cached_framed_or_sniffed(client: TestClient) -> None:
    page = client.get("/sign-in")
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_serving_the_console_for_real_needs_a_secret_an_identity_provider_and_no_dev_sign_in() -> None:
    problems = ConsoleSettings(console_dev_sign_in=True).production_problems()
    assert [p.split(" ")[0] for p in problems] == [
        "PLACEMATCH_CONSOLE_SESSION_SECRET", "PLACEMATCH_CONSOLE_DEV_SIGN_IN", "No"]
    ready = ConsoleSettings(console_session_secret="s" * 40, console_oidc_issuer="https://id.example/realms/p")
    assert ready.production_problems() == []
    assert ConsoleSettings(port=9000).console_listen_port == 9000
    assert ConsoleSettings(port=9000, console_port=9100).console_listen_port == 9100
