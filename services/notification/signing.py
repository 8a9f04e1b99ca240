"""Standard Webhooks signing with the `standardwebhooks` package (no hand-made HMAC)."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from math import floor

from standardwebhooks import Webhook


def signature_headers(*, message_id: str, body: str, secrets: Sequence[str], at: datetime) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` and `webhook-signature` for one attempt.

    Each secret contributes one `v1,<base64>` signature, space-separated, so during a secret
    rotation a receiver holding either secret verifies the message.
    """
    if not secrets:
        raise ValueError("at least one signing secret is required")
    at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    signatures = [Webhook(secret).sign(msg_id=message_id, timestamp=at, data=body) for secret in secrets]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(floor(at.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
