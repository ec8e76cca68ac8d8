"""The voice tier's shared state: calls (claims and leases), tenant locks, replicas, outbox.

Revision ID: 0001_voice_state
Revises:
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_voice_state"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "voice_calls",
        sa.Column("call_sid", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False, index=True),
        sa.Column("holder", sa.String(64), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("caller", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stream_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(64), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
    )
    op.create_table(
        "voice_tenant_locks",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("claims", sa.Integer(), nullable=False),
    )
    op.create_table(
        "voice_replicas",
        sa.Column("replica", sa.String(64), primary_key=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "voice_outbox",
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("item_id", sa.String(200), nullable=False, unique=True),
        sa.Column("record", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    for table in ("voice_outbox", "voice_replicas", "voice_tenant_locks", "voice_calls"):
        op.drop_table(table)
