"""Core schema 2: stored Idempotency-Key answers sealed under their stream's key; the created resource.

Revision ID: enrolment_0003
Revises: enrolment_0002
Create Date: 2026-12-02
"""
from __future__ import annotations

from shared.migrations import add_core_columns_2, drop_core_columns_2

revision = "enrolment_0003"
down_revision = "enrolment_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_core_columns_2()


def downgrade() -> None:
    drop_core_columns_2()
