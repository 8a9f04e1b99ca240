"""Core tables, subscriptions, the delivery log and queue, recipient emails.

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
        "subscriptions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner_role", sa.String(20), nullable=False),
        sa.Column("owner_tenant", sa.String(100), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event_types", sa.Text, nullable=False),
        sa.Column("contact_email", sa.String(320), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("failing_since", sa.String(40), nullable=True),
        sa.Column("disabled_reason", sa.String(100), nullable=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("updated_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_subscriptions_owner", "subscriptions", ["owner_role", "owner_tenant"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("notification_id", sa.String(100), nullable=False),
        sa.Column("subscription_id", sa.String(36), nullable=True),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("event_type", sa.String(60), nullable=False),
        sa.Column("recipient_role", sa.String(20), nullable=False),
        sa.Column("recipient_tenant", sa.String(100), nullable=False),
        sa.Column("referral_id", sa.String(100), nullable=True),
        sa.Column("message_id", sa.String(120), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_status_code", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("failure_reason", sa.String(60), nullable=True),
        sa.Column("next_attempt_at", sa.String(40), nullable=True),
        sa.Column("lease_until", sa.String(40), nullable=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("updated_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_recipient", "deliveries", ["recipient_role", "recipient_tenant"])
    op.create_index("ix_deliveries_subscription", "deliveries", ["subscription_id"])
    op.create_table(
        "delivery_attempts",
        sa.Column("delivery_id", sa.String(36), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("attempted_at", sa.String(40), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("latency_ms", sa.Integer, nullable=False),
        sa.Column("result", sa.String(20), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_table(
        "recipient_emails",
        sa.Column("role", sa.String(20), primary_key=True),
        sa.Column("tenant", sa.String(100), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("updated_at", sa.String(40), nullable=False),
    )


def downgrade() -> None:
    for table in ("recipient_emails", "delivery_attempts", "deliveries", "subscriptions"):
        op.drop_table(table)
