"""The SSRF guard: where a webhook may be sent.

A subscription URL is checked twice over: its form (`check_url_form`, by the request model) and,
unless private targets are allowed, that it names no private, loopback or link-local host
(`check_public_url`, by the subscription); before every attempt the resolved addresses are checked
again (`check_resolved_addresses`), since DNS can change between the two.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from shared.errors import Forbidden, RuleViolation

MAX_URL_LENGTH = 2048


def is_forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for targets a webhook must never reach from inside our network.

    Private, loopback, link-local (cloud metadata at 169.254.169.254), unspecified, multicast,
    reserved and shared (100.64/10) ranges; IPv4-mapped and 6to4/Teredo-wrapped IPv6 addresses are
    judged by the IPv4 address they carry.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None:
            return is_forbidden_address(embedded)
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
        or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED_ADDRESS_SPACE)
        or not address.is_global
    )


_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
_LOCAL_HOST_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a host names literally, including the legacy forms a resolver accepts.

    `2130706433`, `0x7f.1` and `127.1` all mean 127.0.0.1 to `getaddrinfo`, so they are
    normalised with `inet_aton` (a pure parse) rather than trusted as names.
    """
    candidate = host.strip("[]")
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        pass
    if all(part and (part.isdigit() or part.lower().startswith("0x")) for part in candidate.split(".")):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(candidate))
        except OSError:
            return None
    return None


def check_url_form(url: str) -> str:
    """The form of a subscription URL (a request model's check): an absolute http(s) URL naming a
    host, without embedded credentials, at most `MAX_URL_LENGTH` long. Returns it stripped; refuses
    with `RuleViolation(field="url")` (`required`, `max_length`, `valid_url`, `http_or_https`,
    `no_credentials`)."""
    if not isinstance(url, str) or not url.strip():
        raise RuleViolation("A webhook URL is required.", field="url", rule="required")
    if len(url) > MAX_URL_LENGTH:
        raise RuleViolation(
            f"The webhook URL is longer than {MAX_URL_LENGTH} characters.", field="url", rule="max_length"
        )
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise RuleViolation("The webhook URL cannot be parsed.", field="url", rule="valid_url") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise RuleViolation(
            "The webhook URL must use http or https.", field="url", rule="http_or_https"
        )
    if not host:
        raise RuleViolation("The webhook URL must name a host.", field="url", rule="valid_url")
    if parts.username is not None or parts.password is not None:
        raise RuleViolation(
            "The webhook URL must not carry credentials; verify our signature instead.",
            field="url",
            rule="no_credentials",
        )
    return url.strip()


def check_public_url(url: str, *, allow_private: bool) -> str:
    """The rule on a well-formed URL (the domain's check, as it depends on the deployment): unless
    `allow_private`, hosts that are, or obviously name, private/loopback/link-local targets are
    refused (`public_address`); the delivery worker checks the resolved addresses again before
    every attempt (DNS can change)."""
    host = urlsplit(url).hostname or ""
    if not allow_private and is_private_host(host):
        raise RuleViolation(
            f"The webhook URL points at a private, loopback or link-local address ({host}); "
            "use a publicly reachable endpoint.",
            field="url",
            rule="public_address",
        )
    return url


def check_webhook_url(url: str, *, allow_private: bool) -> str:
    """Validate a subscription URL and return it: its form, then where it points."""
    return check_public_url(check_url_form(url), allow_private=allow_private)


def is_private_host(host: str) -> bool:
    """True when a host (before any DNS lookup) is a forbidden literal or a local-only name."""
    lowered = host.lower().rstrip(".")
    if lowered == "localhost" or lowered.endswith(_LOCAL_HOST_SUFFIXES):
        return True
    address = literal_address(lowered)
    return address is not None and is_forbidden_address(address)


def check_resolved_addresses(host: str, addresses: Iterable[str], *, allow_private: bool) -> None:
    """Refuse a delivery whose host resolves to any forbidden address (DNS rebinding defence)."""
    if allow_private:
        return
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if is_forbidden_address(address):
            raise Forbidden(
                f"The webhook host {host} resolves to a non-public address ({address}).",
                field="url",
                rule="public_address",
            )
