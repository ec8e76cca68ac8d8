"""Tables of the dashboard: people who sign in, tenant API keys, sign-in sessions and the audit log.

On the App server's declarative Base; created by migration 0002. Only hashes of passwords, API keys
and session tokens are stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from switchboard.tickets.models import Base, UtcDateTime


class User(Base):
    """A person. `tenant` is null for an operator (role `operator`, every tenant)."""

    __tablename__ = "ui_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    tenant: Mapped[str | None] = mapped_column(String(200), index=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiKey(Base):
    """A tenant's key for /api/*; `key_hash` is the SHA-256 of the key (it is 256 random bits)."""

    __tablename__ = "ui_api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200), index=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))
    key_prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class UiSession(Base):
    """A signed-in browser. The cookie carries the token (signed); the row keeps only its hash."""

    __tablename__ = "ui_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("ui_users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditEvent(Base):
    """Who did what: sign-ins (also failed ones, which the rate limit counts), exports, user and key changes."""

    __tablename__ = "ui_audit_events"
    __table_args__ = (
        Index("ix_ui_audit_action_subject_at", "action", "subject", "at"),
        Index("ix_ui_audit_tenant_at", "tenant", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    tenant: Mapped[str | None] = mapped_column(String(200))
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(320))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
