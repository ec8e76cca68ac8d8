"""Tenants, their routes and tools, knowledge documents and chunks.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("company", sa.Text(), nullable=False),
        sa.Column("greeting", sa.Text(), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("voice", sa.JSON(), nullable=False),
        sa.Column("transcriber", sa.String(32), nullable=False),
        sa.Column("business_hours", sa.JSON(), nullable=True),
        sa.Column("transfer", sa.JSON(), nullable=True),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("profile_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "tenant_routes",
        sa.Column("route_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_key", sa.String(64), sa.ForeignKey("tenants.key", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.UniqueConstraint("kind", "value", name="uq_tenant_routes_kind_value"),
    )
    op.create_index("ix_tenant_routes_tenant_key", "tenant_routes", ["tenant_key"])
    op.create_table(
        "tenant_tools",
        sa.Column("tool_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_key", sa.String(64), sa.ForeignKey("tenants.key", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("http", sa.JSON(), nullable=False),
        sa.UniqueConstraint("tenant_key", "name", name="uq_tenant_tools_tenant_name"),
    )
    op.create_index("ix_tenant_tools_tenant_key", "tenant_tools", ["tenant_key"])
    op.create_table(
        "knowledge_documents",
        sa.Column("document_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_key", sa.String(64), sa.ForeignKey("tenants.key", ondelete="CASCADE"), nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("embedding_model", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_key", "source", name="uq_knowledge_documents_tenant_source"),
    )
    op.create_index("ix_knowledge_documents_tenant_key", "knowledge_documents", ["tenant_key"])
    op.create_table(
        "knowledge_chunks",
        sa.Column("chunk_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "document_id",
            sa.Integer(),
            sa.ForeignKey("knowledge_documents.document_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("tenant_key", sa.String(64), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("heading", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_knowledge_chunks_document_id", "knowledge_chunks", ["document_id"])
    op.create_index("ix_knowledge_chunks_tenant_key", "knowledge_chunks", ["tenant_key"])


def downgrade() -> None:
    op.drop_table("knowledge_chunks")
    op.drop_table("knowledge_documents")
    op.drop_table("tenant_tools")
    op.drop_table("tenant_routes")
    op.drop_table("tenants")
