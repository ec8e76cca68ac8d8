"""Tenant integrations (webhooks, Freshdesk, Zendesk): one row per tenant that configures any.

Revision ID: 0004_tenant_integrations
Revises: 0003_turn_detection_keypad
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_tenant_integrations"
down_revision = "0003_turn_detection_keypad"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_integrations",
        sa.Column(
            "tenant_key", sa.String(64), sa.ForeignKey("tenants.key", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tenant_integrations")
