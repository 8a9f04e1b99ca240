"""Live capacity (issue 16): the places a provider's placements hold, from `provider-vacancies-changed`.

Null until enrolment first reports one (old logs never do): eligibility then judges by capacity alone.

Revision ID: matching_0004
Revises: matching_actors
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "matching_0004"
down_revision = "matching_actors"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("matching_providers", sa.Column("placements_held", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("matching_providers", "placements_held")
