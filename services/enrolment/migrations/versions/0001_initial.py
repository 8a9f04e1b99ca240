"""Core tables and the enrolment read models.

Revision ID: enrolment_0001
Revises:
Create Date: 2026-11-23
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.migrations import create_core_tables

revision = "enrolment_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_core_tables()
    op.create_table(
        "enrolment_providers",
        sa.Column("provider_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("urn", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("quality_score", sa.String(10), nullable=True),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("view", sa.Text, nullable=False),
        sa.Column("applied_at", sa.String(40), nullable=False),
        sa.Column("updated_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_enrolment_providers_status", "enrolment_providers", ["status"])
    op.create_index("ix_enrolment_providers_urn", "enrolment_providers", ["urn"])
    op.create_table(
        "enrolment_provider_lots",
        sa.Column("provider_id", sa.String(36), primary_key=True),
        sa.Column("lot", sa.String(10), primary_key=True),
    )
    op.create_index("ix_enrolment_provider_lots_lot", "enrolment_provider_lots", ["lot"])


def downgrade() -> None:
    """Drop the read models only: the event log and outbox are never dropped by a migration."""
    op.drop_table("enrolment_provider_lots")
    op.drop_table("enrolment_providers")
