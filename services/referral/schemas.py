"""The referral API's machine-readable contract (issue 15), for `shared.openapi`/`shared.preconditions`."""
from __future__ import annotations

ETAGS: set[tuple[str, str]] = {
    ("GET", "/referrals/{referral_id}"),
    *{("POST", f"/referrals/{{referral_id}}/{action}") for action in ("amend", "withdraw", "close", "award", "erase")},
}
"""Routes answering with the referral's ETag (its stream version; the owning borough's view also
names it as `version`); the writes among them honour If-Match."""
