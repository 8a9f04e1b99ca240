"""Core tables and the referral read models.

Revision ID: referral_0001
Revises:
Create Date: 2026-11-23
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.migrations import create_core_tables

revision = "referral_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_core_tables()
    op.create_table(
        "referral_views",
        sa.Column("referral_id", sa.String(36), primary_key=True),
        sa.Column("borough", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("offer_deadline", sa.String(40), nullable=False),
        sa.Column("raised_at", sa.String(40), nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("referral", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=True),
    )
    op.create_index("ix_referral_views_borough", "referral_views", ["borough"])
    op.create_index("ix_referral_views_status", "referral_views", ["status"])
    op.create_index("ix_referral_views_offer_deadline", "referral_views", ["offer_deadline"])
    op.create_table(
        "referral_offers",
        sa.Column("offer_id", sa.String(64), primary_key=True),
        sa.Column("referral_id", sa.String(36), nullable=False),
        sa.Column("provider_id", sa.String(100), nullable=False),
        sa.Column("weekly_fee_pence", sa.BigInteger, nullable=False),
        sa.Column("start_date", sa.String(10), nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("submitted_at", sa.String(40), nullable=False),
        sa.Column("withdrawal_reason", sa.Text, nullable=True),
    )
    op.create_index("ix_referral_offers_referral_id", "referral_offers", ["referral_id"])
    op.create_index("ix_referral_offers_provider_id", "referral_offers", ["provider_id"])
    op.create_table(
        "referral_declines",
        sa.Column("referral_id", sa.String(36), primary_key=True),
        sa.Column("provider_id", sa.String(100), primary_key=True),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("note", sa.Text, nullable=True),
    )
    op.create_table(
        "referral_matches",
        sa.Column("referral_id", sa.String(36), primary_key=True),
        sa.Column("borough", sa.String(100), nullable=True),
        sa.Column("invited", sa.Text, nullable=False),
        sa.Column("matched_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "referral_invitations",
        sa.Column("referral_id", sa.String(36), primary_key=True),
        sa.Column("provider_id", sa.String(100), primary_key=True),
        sa.Column("invited_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_referral_invitations_provider_id", "referral_invitations", ["provider_id"])
    op.create_table(
        "referral_provider_standing",
        sa.Column("provider_id", sa.String(100), primary_key=True),
        sa.Column("suspended", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("updated_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "referral_shortlists",
        sa.Column("referral_id", sa.String(36), primary_key=True),
        sa.Column("policy_version", sa.Integer, nullable=True),
        sa.Column("entries", sa.Text, nullable=False),
        sa.Column("excluded", sa.Text, nullable=False),
        sa.Column("ranked_at", sa.String(40), nullable=False),
    )


def downgrade() -> None:
    for table in ("referral_shortlists", "referral_provider_standing", "referral_invitations",
                  "referral_matches", "referral_declines", "referral_offers", "referral_views"):
        op.drop_table(table)
