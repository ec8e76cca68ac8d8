"""Call charges: one row per (tenant, call_sid), so a call's minutes are charged exactly once.

Revision ID: 0002_call_charges
Revises: 0001_initial
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_call_charges"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_charges",
        sa.Column("charge_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_key", sa.String(64), sa.ForeignKey("tenants.key"), nullable=False),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("charged_at", sa.DateTime(timezone=True), nullable=False),
        # Also the index that sums a tenant's charges when the tenant file is reloaded.
        sa.UniqueConstraint("tenant_key", "call_sid", name="uq_call_charges_tenant_call_sid"),
    )


def downgrade() -> None:
    op.drop_table("call_charges")
