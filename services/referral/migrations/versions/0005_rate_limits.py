"""Rate-limit counters (core schema version 3), shared by the service's replicas.

Revision ID: referral_rate_limits
Revises: referral_0004
"""
from __future__ import annotations

from shared.migrations import create_rate_limit_table, drop_rate_limit_table

revision = "referral_rate_limits"
down_revision = "referral_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_rate_limit_table()


def downgrade() -> None:
    drop_rate_limit_table()
