"""Rate-limit counters (core schema version 3), shared by the service's replicas.

Revision ID: enrolment_rate_limits
Revises: enrolment_0003
"""
from __future__ import annotations

from shared.migrations import create_rate_limit_table, drop_rate_limit_table

revision = "enrolment_rate_limits"
down_revision = "enrolment_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_rate_limit_table()


def downgrade() -> None:
    drop_rate_limit_table()
