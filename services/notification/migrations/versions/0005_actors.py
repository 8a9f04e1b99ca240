"""Who each `actorid` is, for the audit record (core schema version 4).

Revision ID: notification_actors
Revises: notification_rate_limits
"""
from __future__ import annotations

from shared.migrations import create_actors_table, drop_actors_table

revision = "notification_actors"
down_revision = "notification_rate_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_actors_table()


def downgrade() -> None:
    drop_actors_table()
