"""Tickets: an optional idempotency key, so a retried creation returns the ticket the first one made.

Revision ID: 0004_ticket_idempotency
Revises: 0003_integrations
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_ticket_idempotency"
down_revision = "0003_integrations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(200), nullable=True))
        batch.create_index("ux_tickets_idempotency_key", ["idempotency_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_index("ux_tickets_idempotency_key")
        batch.drop_column("idempotency_key")
