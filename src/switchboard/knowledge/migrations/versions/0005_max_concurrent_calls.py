"""Tenants: `max_concurrent_calls` (optional), enforced across voice servers by the voice tier's state.

Revision ID: 0005_max_concurrent_calls
Revises: 0004_tenant_integrations
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_max_concurrent_calls"
down_revision = "0004_tenant_integrations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("max_concurrent_calls", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("max_concurrent_calls")
