"""Who each `actorid` is, for the audit record (core schema version 4).

Revision ID: placement_actors
Revises: placement_0001
"""
from __future__ import annotations

from shared.migrations import create_actors_table, drop_actors_table

revision = "placement_actors"
down_revision = "placement_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_actors_table()


def downgrade() -> None:
    drop_actors_table()
