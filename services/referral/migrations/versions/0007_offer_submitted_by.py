"""Who made and who withdrew each offer (issue 17): `referral_offers.submitted_by` / `withdrawn_by`,
the `actorid` (token `sub`) of the offer-submitted / offer-withdrawn envelope. Rows of before stay null.

Revision ID: referral_0006_offer_submitted_by
Revises: referral_actors
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "referral_0006_offer_submitted_by"
down_revision = "referral_actors"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("referral_offers", sa.Column("submitted_by", sa.String(100), nullable=True))
    op.add_column("referral_offers", sa.Column("withdrawn_by", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("referral_offers") as batch:
        batch.drop_column("withdrawn_by")
        batch.drop_column("submitted_by")
