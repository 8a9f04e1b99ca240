"""One active provider per Ofsted URN: a partial unique index on the providers read model.

Revision ID: enrolment_0002
Revises: enrolment_0001
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "enrolment_0002"
down_revision = "enrolment_0001"
branch_labels = None
depends_on = None

NOT_REJECTED = "status <> 'rejected'"


def upgrade() -> None:
    # Two applications that raced past the old read-before-write check may both be active; the
    # index cannot be built over them, so say which they are (reject one of each pair, then retry).
    duplicates = op.get_bind().execute(sa.text(
        "SELECT urn, provider_id FROM enrolment_providers WHERE urn IN ("
        f"SELECT urn FROM enrolment_providers WHERE {NOT_REJECTED} "
        "GROUP BY urn HAVING COUNT(*) > 1) "
        f"AND {NOT_REJECTED} ORDER BY urn, provider_id")).all()
    if duplicates:
        listed = "; ".join(f"URN {row.urn}: provider {row.provider_id}" for row in duplicates)
        raise RuntimeError("cannot add the one-active-provider-per-URN index: these providers share "
                           f"a URN and are not rejected ({listed}); reject all but one of each URN "
                           "with the previous release, then upgrade again")
    op.create_index("uq_enrolment_providers_active_urn", "enrolment_providers", ["urn"],
                    unique=True, sqlite_where=sa.text(NOT_REJECTED),
                    postgresql_where=sa.text(NOT_REJECTED))


def downgrade() -> None:
    op.drop_index("uq_enrolment_providers_active_urn", table_name="enrolment_providers")
