"""Tables of the voice tier's shared state. Schema changes go through migrations/ (Alembic)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class VoiceCall(Base):
    """One call SID, claimed once. `holder` is the voice server running it (or that pre-opened it);
    the row's concurrency lease counts while `status` is claimed/live and `lease_expires_at` is ahead."""

    __tablename__ = "voice_calls"

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    holder: Mapped[str] = mapped_column(String(64), index=True)
    # claimed (webhook answered) -> live (stream attached) -> ended | lost; claimed -> unused.
    status: Mapped[str] = mapped_column(String(16), index=True)
    caller: Mapped[str] = mapped_column(String(64), default="")  # masked (+1******0123): never a full number
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stream_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lease_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)


class VoiceTenantLock(Base):
    """One row per tenant, locked (SELECT ... FOR UPDATE) while a claim counts that tenant's live calls."""

    __tablename__ = "voice_tenant_locks"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    claims: Mapped[int] = mapped_column(Integer, default=0)


class VoiceReplica(Base):
    """A voice server of the deployment: its last heartbeat, and when it left cleanly (SIGTERM)."""

    __tablename__ = "voice_replicas"

    replica: Mapped[str] = mapped_column(String(64), primary_key=True)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    left_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class VoiceOutboxRecord(Base):
    """A record of the App server outbox not yet acknowledged, owned by the voice server delivering it."""

    __tablename__ = "voice_outbox"

    position: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                          autoincrement=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    item_id: Mapped[str] = mapped_column(String(200), unique=True)
    record: Mapped[str] = mapped_column(Text)
