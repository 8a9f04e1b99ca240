"""The notification API's machine-readable contract (issue 15), for `shared.openapi`/`shared.preconditions`."""
from __future__ import annotations

ETAGS: set[tuple[str, str]] = {
    ("PATCH", "/subscriptions/{subscription_id}"), ("DELETE", "/subscriptions/{subscription_id}"),
    *{("POST", f"/subscriptions/{{subscription_id}}/{action}") for action in ("rotate-secret", "enable", "disable")},
}
"""Writes of a subscription that answer with its ETag (its stream version) and honour If-Match."""
