"""The SSRF guard: a webhook URL's form, where it points, and the addresses it resolves to."""
from __future__ import annotations

import pytest

from services.notification.ssrf import check_resolved_addresses, check_webhook_url
from shared.errors import Forbidden, RuleViolation


@pytest.mark.parametrize(
    "url",
    [
        "https://portal.example/hooks",
        "http://portal.example:8080/x?y=1",
        "https://93.184.216.34/hook",
        "https://[2606:4700::1111]/hook",
    ],
)
def test_public_http_urls_are_accepted(url: str) -> None:
    assert check_webhook_url(url, allow_private=False) == url


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://portal.example/x", "http_or_https"),
        ("file:///etc/passwd", "http_or_https"),
        ("gopher://portal.example/", "http_or_https"),
        ("portal.example/hooks", "http_or_https"),
        ("", "required"),
        ("https://", "valid_url"),
        ("https://user:pw@portal.example/", "no_credentials"),
        ("https://portal.example:99999/", "valid_url"),
        ("http://127.0.0.1/", "public_address"),
        ("http://localhost:8004/", "public_address"),
        ("http://api.localhost/", "public_address"),
        ("http://10.1.2.3/", "public_address"),
        ("http://192.168.0.10/", "public_address"),
        ("http://172.16.5.4/", "public_address"),
        ("http://169.254.169.254/latest/meta-data/", "public_address"),
        ("http://[::1]/", "public_address"),
        ("http://[fe80::1]/", "public_address"),
        ("http://[fd00::1]/", "public_address"),
        ("http://[::ffff:127.0.0.1]/", "public_address"),
        ("http://0.0.0.0/", "public_address"),
        ("http://2130706433/", "public_address"),
        ("http://0x7f.1/", "public_address"),
        ("http://127.1/", "public_address"),
        ("http://100.64.0.1/", "public_address"),
        ("http://metadata.google.internal/", "public_address"),
    ],
)
def test_bad_or_private_urls_are_refused_naming_the_field(url: str, rule: str) -> None:
    with pytest.raises(RuleViolation) as refused:
        check_webhook_url(url, allow_private=False)
    assert refused.value.field == "url"
    assert refused.value.rule == rule


def test_private_targets_allowed_when_configured() -> None:
    assert check_webhook_url("http://127.0.0.1:9000/hook", allow_private=True)
    with pytest.raises(RuleViolation):
        check_webhook_url("ftp://127.0.0.1/", allow_private=True)


def test_resolved_addresses_are_checked_again() -> None:
    check_resolved_addresses("portal.example", ["93.184.216.34"], allow_private=False)
    with pytest.raises(Forbidden) as refused:
        check_resolved_addresses("rebind.example", ["93.184.216.34", "10.0.0.7"], allow_private=False)
    assert refused.value.field == "url"
    check_resolved_addresses("rebind.example", ["10.0.0.7"], allow_private=True)
