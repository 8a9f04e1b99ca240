"""Signatures must verify with the `standardwebhooks` package's own verifier."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from services.notification.signing import signature_headers
from services.notification.subscriptions import new_signing_secret

BODY = '{"type":"referral.invited","timestamp":"2026-06-01T09:00:00Z","data":{"referral_id":"r-1"}}'


def test_signature_verifies_with_standardwebhooks() -> None:
    secret = new_signing_secret()
    headers = signature_headers(message_id="msg_n-1", body=BODY, secrets=[secret], at=datetime.now(UTC))
    assert headers["webhook-id"] == "msg_n-1"
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == {
        "type": "referral.invited", "timestamp": "2026-06-01T09:00:00Z", "data": {"referral_id": "r-1"},
    }


def test_wrong_secret_or_tampered_body_fails() -> None:
    headers = signature_headers(
        message_id="msg_n-1", body=BODY, secrets=[new_signing_secret()], at=datetime.now(UTC)
    )
    with pytest.raises(WebhookVerificationError):
        Webhook(new_signing_secret()).verify(BODY, headers)


def test_both_secrets_sign_during_rotation() -> None:
    old, new = new_signing_secret(), new_signing_secret()
    headers = signature_headers(message_id="m", body=BODY, secrets=[new, old], at=datetime.now(UTC))
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)


def test_timestamp_is_the_attempt_time_in_unix_seconds() -> None:
    at = datetime(2026, 6, 1, 9, 0, 30, 900000, tzinfo=timezone(timedelta(hours=1)))
    headers = signature_headers(message_id="m", body=BODY, secrets=[new_signing_secret()], at=at)
    assert headers["webhook-timestamp"] == str(int(datetime(2026, 6, 1, 8, 0, 30, tzinfo=UTC).timestamp()))


def test_no_secret_is_an_error() -> None:
    with pytest.raises(ValueError):
        signature_headers(message_id="m", body=BODY, secrets=[], at=datetime.now(UTC))
