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
    ("webhooks_received", "webhooks received (signature checked)"),
    ("placements_opened", "placements opened by awards"), ("placements_off_framework", "off-framework placements"),
    ("placements_started", "placements started"), ("funding_agreed", "funding agreed by panels"),
    ("placement_reviews", "placement reviews"), ("fee_changes_requested", "fee uplifts requested"),
    ("fee_changes_agreed", "  agreed"), ("fee_changes_agreed_in_part", "  agreed in part"),
    ("fee_changes_declined", "  declined"), ("placements_ended", "placements ended"),
    ("placements_ended_unplanned", "  of which unplanned"),
    ("placement_spend_pence", "placement spend, a year either side of today"),
    ("placement_spend_off_framework_pence", "  of which off-framework"),
    ("errors", "errors"),
)
MONEY = {"placement_spend_pence", "placement_spend_off_framework_pence"}


def _shown(key: str, counts: dict[str, int]) -> str:
    value = counts.get(key, 0)
    if key in MONEY:
        return f"£{value / 100:,.2f}"
    if key == "placements_ended_unplanned" and counts.get("placements_ended"):
        return f"{value} ({100 * value / counts['placements_ended']:.0f}%)"
    return str(value)


def counts_table(counts: dict[str, int], seconds: float, requests: int) -> Table:
    table = Table(title=f"placematch demo: {requests} requests in {seconds:.1f}s")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, label in COUNT_ROWS:
        style = "red" if key == "errors" and counts.get(key) else None
        table.add_row(label, _shown(key, counts), style=style)
    return table
