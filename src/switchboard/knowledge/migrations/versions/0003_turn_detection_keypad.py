"""Per-tenant turn detection and keypad shortcuts (both as written in the tenant file).

Revision ID: 0003_turn_detection_keypad
Revises: 0002_call_charges
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_turn_detection_keypad"
down_revision = "0002_call_charges"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("turn_detection", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("keypad", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("keypad")
        batch.drop_column("turn_detection")
