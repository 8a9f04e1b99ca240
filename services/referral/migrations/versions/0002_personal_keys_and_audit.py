"""Sealing keys for the child's details, and the audit trail of other services' decisions.

Revision ID: referral_0002
Revises: referral_0001
Create Date: 2026-11-23
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "referral_0002"
down_revision = "referral_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referral_personal_keys",
        sa.Column("referral_id", sa.String(36), primary_key=True),
        sa.Column("key", sa.String(64), nullable=True),
        sa.Column("erased_at", sa.String(40), nullable=True),
    )
    op.create_table(
        "referral_audit_trail",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("referral_id", sa.String(36), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_referral_audit_trail_referral_id", "referral_audit_trail", ["referral_id"])


def downgrade() -> None:
    op.drop_index("ix_referral_audit_trail_referral_id", "referral_audit_trail")
    op.drop_table("referral_audit_trail")
    op.drop_table("referral_personal_keys")
