"""Rate-limit counters (core schema version 2), shared by the service's replicas.

Revision ID: matching_rate_limits
Revises: 0001
"""
from __future__ import annotations

from shared.migrations import create_rate_limit_table, drop_rate_limit_table

revision = "matching_rate_limits"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_rate_limit_table()


def downgrade() -> None:
    drop_rate_limit_table()
