"""Dashboard: users, API keys, sessions, audit log; call figures, interrupted answers, transcript search.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SQLITE_FTS = (
    "CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='messages', content_rowid='id')",
    "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
    "INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text); END",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
)


def upgrade() -> None:
    op.add_column("conversations", sa.Column("turn_count", sa.Integer(), nullable=True))
    op.add_column("conversations", sa.Column("median_turn_ms", sa.Float(), nullable=True))
    op.add_column("conversations", sa.Column("cost", sa.Float(), nullable=True))
    op.create_index("ix_conversations_started", "conversations", ["started_at", "id"])
    op.create_index("ix_conversations_tenant_started", "conversations", ["tenant", "started_at", "id"])
    op.add_column(
        "messages", sa.Column("interrupted", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE_FTS:
            op.execute(statement)
    else:
        op.execute("CREATE INDEX ix_messages_text_search ON messages USING gin (to_tsvector('simple', text))")

    op.create_table(
        "ui_users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("tenant", sa.String(200), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ui_users_tenant", "ui_users", ["tenant"])
    op.create_table(
        "ui_api_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_ui_api_keys_tenant", "ui_api_keys", ["tenant"])
    op.create_table(
        "ui_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("ui_users.id", ondelete="CASCADE", name="fk_ui_sessions_user_id"),
            nullable=False,
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ui_sessions_user_id", "ui_sessions", ["user_id"])
    op.create_table(
        "ui_audit_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=True),
        sa.Column("actor", sa.String(320), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(320), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
    )
    op.create_index("ix_ui_audit_action_subject_at", "ui_audit_events", ["action", "subject", "at"])
    op.create_index("ix_ui_audit_tenant_at", "ui_audit_events", ["tenant", "at"])


def downgrade() -> None:
    for table in ("ui_audit_events", "ui_sessions", "ui_api_keys", "ui_users"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("messages_fts_insert", "messages_fts_delete", "messages_fts_update"):
            op.execute(f"DROP TRIGGER {trigger}")
        op.execute("DROP TABLE messages_fts")
    else:
        op.execute("DROP INDEX ix_messages_text_search")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("interrupted")
    op.drop_index("ix_conversations_tenant_started", table_name="conversations")
    op.drop_index("ix_conversations_started", table_name="conversations")
    with op.batch_alter_table("conversations") as batch:
        for column in ("cost", "median_turn_ms", "turn_count"):
            batch.drop_column(column)
