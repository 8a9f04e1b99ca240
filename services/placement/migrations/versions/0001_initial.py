"""Core tables (at their current schema) and the placement read models.

Revision ID: placement_0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.migrations import create_core_tables, create_rate_limit_table

revision = "placement_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_core_tables()  # includes core schema 2's columns, as shared/schema.py declares them now
    create_rate_limit_table()
    op.create_table(
        "placement_placements",
        sa.Column("placement_id", sa.String(64), primary_key=True),
        sa.Column("borough", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(200), nullable=False),
        sa.Column("referral_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("review_due", sa.String(10), nullable=True),
        sa.Column("view", sa.Text, nullable=False),
    )
    op.create_index("ix_placement_placements_borough", "placement_placements", ["borough"])
    op.create_index("ix_placement_placements_provider_id", "placement_placements", ["provider_id"])
    op.create_index("ix_placement_placements_referral_id", "placement_placements", ["referral_id"])
    op.create_index("ix_placement_placements_status", "placement_placements", ["status"])
    op.create_table(
        "placement_referral_facts",
        sa.Column("referral_id", sa.String(64), primary_key=True),
        sa.Column("facts", sa.Text, nullable=False),
    )
    op.create_table(
        "placement_shortlists",
        sa.Column("referral_id", sa.String(64), primary_key=True),
        sa.Column("entries", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("placement_shortlists", "placement_referral_facts", "placement_placements"):
        op.drop_table(table)
