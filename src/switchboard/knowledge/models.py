"""Tables of the AI server (SQLAlchemy 2, async). The schema itself is created by the Alembic migrations.

Tenants keep their profile as loaded; routes, tools and knowledge documents hang off a tenant and go
with it. `tenants.credits` is the live balance; `call_charges` records every call charged against it. Embeddings are float32 little-endian bytes so the same column works on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    company: Mapped[str] = mapped_column(Text)
    greeting: Mapped[str] = mapped_column(Text)
    instructions: Mapped[str] = mapped_column(Text)
    voice: Mapped[dict[str, Any]] = mapped_column(JSON)
    transcriber: Mapped[str] = mapped_column(String(32))
    # As written in the tenant file; parsed with business_hours.parse_business_hours when read.
    business_hours: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    transfer: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # As written (only the keys given); None: the default server VAD.
    turn_detection: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    keypad: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    # Minutes left: the file's allowance minus the minutes charged (see tenant_loader), never below 0.
    credits: Mapped[int] = mapped_column(Integer)
    max_concurrent_calls: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # sha256 of the profile (without knowledge); a reload with the same hash changes nothing.
    profile_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    routes: Mapped[list[TenantRoute]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    tools: Mapped[list[TenantTool]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="TenantTool.position"
    )


class TenantRoute(Base):
    """One way a call reaches a tenant: a SIP domain, a number (To) or an application SID."""

    __tablename__ = "tenant_routes"
    __table_args__ = (UniqueConstraint("kind", "value", name="uq_tenant_routes_kind_value"),)

    route_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_key: Mapped[str] = mapped_column(ForeignKey("tenants.key", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # sip_domain | number | application_sid
    value: Mapped[str] = mapped_column(String(255))


class TenantTool(Base):
    __tablename__ = "tenant_tools"
    __table_args__ = (UniqueConstraint("tenant_key", "name", name="uq_tenant_tools_tenant_name"),)

    tool_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_key: Mapped[str] = mapped_column(ForeignKey("tenants.key", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    # {method, url, headers, timeout_s, allow_private_network}; headers keep ${VAR} unexpanded.
    http: Mapped[dict[str, Any]] = mapped_column(JSON)


class KnowledgeDocument(Base):
    __tablename__ = "knowledge_documents"
    __table_args__ = (UniqueConstraint("tenant_key", "source", name="uq_knowledge_documents_tenant_source"),)

    document_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_key: Mapped[str] = mapped_column(ForeignKey("tenants.key", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(1024))  # the path as written, or inline:<title>
    title: Mapped[str] = mapped_column(Text)
    # sha256 over the extracted text, the chunker version and the embedding model: equal means unchanged.
    content_sha256: Mapped[str] = mapped_column(String(64))
    embedding_model: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    chunks: Mapped[list[KnowledgeChunk]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="KnowledgeChunk.ordinal"
    )


class KnowledgeChunk(Base):
    __tablename__ = "knowledge_chunks"

    chunk_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("knowledge_documents.document_id", ondelete="CASCADE"), index=True)
    # Denormalised so a search reads one tenant's chunks with one indexed query.
    tenant_key: Mapped[str] = mapped_column(String(64), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    heading: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)


class CallCharge(Base):
    """One call's minutes, charged to its tenant exactly once: the unique key makes a repeat a no-op."""

    __tablename__ = "call_charges"
    __table_args__ = (UniqueConstraint("tenant_key", "call_sid", name="uq_call_charges_tenant_call_sid"),)

    charge_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # No cascade: billing records outlive whatever happens to the tenant row.
    tenant_key: Mapped[str] = mapped_column(ForeignKey("tenants.key"))
    call_sid: Mapped[str] = mapped_column(String(64))
    # Minutes the call used (ceil of duration_s / 60), recorded in full even when the balance had less.
    minutes: Mapped[int] = mapped_column(Integer)
    duration_s: Mapped[float] = mapped_column(Float)
    charged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TenantIntegrations(Base):
    """A tenant's `integrations:` as written (`${VAR}` unexpanded), served to the App server which runs them."""

    __tablename__ = "tenant_integrations"

    tenant_key: Mapped[str] = mapped_column(ForeignKey("tenants.key", ondelete="CASCADE"), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
