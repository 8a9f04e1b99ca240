"""Rate-limit counters (core schema version 3), shared by the service's replicas.

Revision ID: matching_rate_limits
Revises: matching_0002
"""
from __future__ import annotations

from shared.migrations import create_rate_limit_table, drop_rate_limit_table

revision = "matching_rate_limits"
down_revision = "matching_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_rate_limit_table()


def downgrade() -> None:
    drop_rate_limit_table()
