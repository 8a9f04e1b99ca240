"""Signing secrets sealed in a table of their own, out of the event log.

Revision ID: 0003
Revises: notification_0002

Secrets recorded in clear by version-1 subscription events are not moved here: copying them would
not take them out of those events, and editing the events would break the hash chain that
`placematch verify` checks. The upcasters in `domain.py` keep them signing until they are rotated.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "notification_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscription_secrets",
        sa.Column("secret_id", sa.String(36), primary_key=True),
        sa.Column("subscription_id", sa.String(36), nullable=False),
        sa.Column("sealed", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("retire_at", sa.String(40), nullable=True),
    )
    op.create_index("ix_subscription_secrets_subscription", "subscription_secrets", ["subscription_id"])


def downgrade() -> None:
    op.drop_index("ix_subscription_secrets_subscription", "subscription_secrets")
    op.drop_table("subscription_secrets")
