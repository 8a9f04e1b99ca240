"""Who each `actorid` is, for the audit record (core schema version 4).

Revision ID: enrolment_actors
Revises: enrolment_rate_limits
"""
from __future__ import annotations

from shared.migrations import create_actors_table, drop_actors_table

revision = "enrolment_actors"
down_revision = "enrolment_rate_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_actors_table()


def downgrade() -> None:
    drop_actors_table()
