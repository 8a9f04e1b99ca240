"""Who each `actorid` is, for the audit record (core schema version 4).

Revision ID: referral_actors
Revises: referral_rate_limits
"""
from __future__ import annotations

from shared.migrations import create_actors_table, drop_actors_table

revision = "referral_actors"
down_revision = "referral_rate_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_actors_table()


def downgrade() -> None:
    drop_actors_table()
