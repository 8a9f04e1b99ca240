"""What the demo prints: the counts of what it did."""
from __future__ import annotations

from rich.table import Table

COUNT_ROWS: tuple[tuple[str, str], ...] = (
    ("providers_applied", "providers applied"), ("providers_approved", "providers approved (active)"),
    ("providers_rejected", "providers rejected"), ("providers_suspended", "providers suspended"),
    ("providers_pending", "applications awaiting decision"), ("providers_reinstated", "suspensions lifted"),
    ("inspections", "inspections recorded"), ("outcomes_recorded", "outcome returns recorded"),
    ("referrals_raised", "referrals raised"), ("referrals_awarded", "referrals awarded"),
    ("awards_with_justification", "  of which not the top offer (justified)"),
    ("referrals_withdrawn", "referrals withdrawn"), ("referrals_closed_unfilled", "referrals closed unfilled"),
    ("referrals_no_eligible", "  of which no eligible provider"), ("referrals_open", "referrals left open"),
    ("referrals_amended", "referrals amended"), ("invitations", "invitations"), ("offers", "offers"),
    ("offers_withdrawn", "offers withdrawn"), ("declines", "declines"), ("subscriptions", "webhook subscriptions"),
    ("webhooks_received", "webhooks received (signature checked)"), ("errors", "errors"),
)


def counts_table(counts: dict[str, int], seconds: float, requests: int) -> Table:
    table = Table(title=f"placematch demo: {requests} requests in {seconds:.1f}s")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, label in COUNT_ROWS:
        style = "red" if key == "errors" and counts.get(key) else None
        table.add_row(label, str(counts.get(key, 0)), style=style)
    return table
