"""Integrations: what the retention needs (when a delivery finished, counts of pruned ones, indexes).

Revision ID: 0005_delivery_retention
Revises: 0004_ticket_idempotency
Create Date: 2026-12-05

Existing rows are backfilled: a finished delivery's `finished_at` is its delivery, else its last attempt,
else its creation; an event fanned out to no endpoint becomes `skipped`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_delivery_retention"
down_revision = "0004_ticket_idempotency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("integration_deliveries") as batch:
        batch.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_integration_deliveries_event", ["event_id"])
        batch.create_index("ix_integration_deliveries_finished", ["kind", "finished_at"])
    with op.batch_alter_table("integration_endpoints") as batch:
        batch.add_column(sa.Column("pruned_delivered", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("pruned_failed", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_integration_events_age", "integration_events", ["status", "occurred_at"])
    op.execute(
        "UPDATE integration_deliveries SET finished_at = COALESCE(delivered_at, last_attempt_at, created_at)"
        " WHERE status IN ('delivered', 'failed')"
    )
    op.execute(
        "UPDATE integration_events SET status = 'skipped' WHERE status = 'done' AND NOT EXISTS"
        " (SELECT 1 FROM integration_deliveries d WHERE d.event_id = integration_events.id)"
    )


def downgrade() -> None:
    op.execute("UPDATE integration_events SET status = 'done' WHERE status = 'skipped'")
    op.drop_index("ix_integration_events_age", table_name="integration_events")
    with op.batch_alter_table("integration_endpoints") as batch:
        batch.drop_column("pruned_failed")
        batch.drop_column("pruned_delivered")
    with op.batch_alter_table("integration_deliveries") as batch:
        batch.drop_index("ix_integration_deliveries_finished")
        batch.drop_index("ix_integration_deliveries_event")
        batch.drop_column("finished_at")
