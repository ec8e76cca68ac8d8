"""Conversations, messages and tickets.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=True),
        sa.Column("caller_masked", sa.String(40), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("end_reason", sa.String(100), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("trace_id", sa.String(200), nullable=True),
        sa.Column("turns", sa.JSON(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.UniqueConstraint("call_sid", name="uq_conversations_call_sid"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "conversation_id",
            sa.Integer(),
            sa.ForeignKey("conversations.id", ondelete="CASCADE", name="fk_messages_conversation_id"),
            nullable=False,
        ),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("arguments", sa.JSON(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.UniqueConstraint("conversation_id", "message_id", name="uq_messages_conversation_message_id"),
    )
    op.create_index("ix_messages_conversation_order", "messages", ["conversation_id", "seq", "at"])
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("phone_number", sa.String(40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_time", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_tickets_call_sid", "tickets", ["call_sid"])


def downgrade() -> None:
    op.drop_index("ix_tickets_call_sid", table_name="tickets")
    op.drop_table("tickets")
    op.drop_index("ix_messages_conversation_order", table_name="messages")
    op.drop_table("messages")
    op.drop_table("conversations")
