"""Core tables and the matching read models.

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.migrations import create_core_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_core_tables()
    op.create_table(
        "matching_providers",
        sa.Column("provider_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("profile", sa.Text, nullable=False),
        sa.Column("quality_score", sa.String(10), nullable=True),
    )
    op.create_table(
        "matching_referrals",
        sa.Column("referral_id", sa.String(64), primary_key=True),
        sa.Column("borough", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("facts", sa.Text, nullable=False),
        sa.Column("primary_need", sa.String(10), nullable=False),
        sa.Column("raised_at", sa.String(40), nullable=False),
        sa.Column("invited_count", sa.Integer, nullable=False),
        sa.Column("awarded_offer_id", sa.String(64), nullable=True),
        sa.Column("awarded_fee_pence", sa.Integer, nullable=True),
        sa.Column("awarded_at", sa.String(40), nullable=True),
        sa.Column("closed_unfilled", sa.Boolean, nullable=False),
    )
    op.create_index("ix_matching_referrals_borough", "matching_referrals", ["borough"])
    op.create_index("ix_matching_referrals_status", "matching_referrals", ["status"])
    op.create_table(
        "matching_offers",
        sa.Column("offer_id", sa.String(64), primary_key=True),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("weekly_fee_pence", sa.Integer, nullable=False),
        sa.Column("submitted_at", sa.String(40), nullable=False),
        sa.Column("arrival", sa.Integer, nullable=False),
        sa.Column("withdrawn", sa.Boolean, nullable=False),
    )
    op.create_index("ix_matching_offers_referral_id", "matching_offers", ["referral_id"])
    op.create_index("ix_matching_offers_provider_id", "matching_offers", ["provider_id"])
    op.create_table(
        "matching_declines",
        sa.Column("referral_id", sa.String(64), primary_key=True),
        sa.Column("provider_id", sa.String(64), primary_key=True),
        sa.Column("reason", sa.String(40), nullable=False),
    )
    op.create_table(
        "matching_eligibility",
        sa.Column("referral_id", sa.String(64), primary_key=True),
        sa.Column("provider_id", sa.String(64), primary_key=True),
        sa.Column("eligible", sa.Boolean, nullable=False),
        sa.Column("invited", sa.Boolean, nullable=False),
        sa.Column("rules", sa.Text, nullable=False),
        sa.Column("distance_km", sa.String(20), nullable=True),
        sa.Column("trigger", sa.String(40), nullable=False),
    )
    op.create_table(
        "matching_shortlists",
        sa.Column("referral_id", sa.String(64), primary_key=True),
        sa.Column("borough", sa.String(64), nullable=False),
        sa.Column("policy_version", sa.Integer, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
    )


def downgrade() -> None:
    for table in ("matching_shortlists", "matching_eligibility", "matching_declines", "matching_offers",
                  "matching_referrals", "matching_providers"):
        op.drop_table(table)
