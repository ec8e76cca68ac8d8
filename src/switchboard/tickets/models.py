"""Tables of the App server: conversations, their messages, and tickets.

Times are stored as UTC: SQLite keeps no zone, so `UtcDateTime` normalises on the way in and
re-attaches UTC on the way out. The caller's number is stored masked; a ticket's number is
stored in full because a callback needs it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime in, an aware UTC datetime out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the App server stores aware times only")
        value = value.astimezone(UTC)
        # SQLite would otherwise store the offset as text and compare strings of mixed zones.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Conversation(Base):
    """One per call_sid. A row created by a message or an end before the open is a placeholder:
    tenant and caller stay null until the open (PUT) arrives."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("call_sid", name="uq_conversations_call_sid"),
        Index("ix_conversations_started", "started_at", "id"),
        Index("ix_conversations_tenant_started", "tenant", "started_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str | None] = mapped_column(String(200))
    caller_masked: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    end_reason: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    trace_id: Mapped[str | None] = mapped_column(String(200))
    turns: Mapped[list[Any] | None] = mapped_column(JSON)
    summary: Mapped[str | None] = mapped_column(Text)
    # Figures derived once at the end (tickets/figures.py), so the dashboard can list and filter by them.
    turn_count: Mapped[int | None] = mapped_column(Integer)
    median_turn_ms: Mapped[float | None] = mapped_column(Float)
    cost: Mapped[float | None] = mapped_column(Float)

    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation",
        order_by=lambda: [Message.seq, Message.at, Message.id],
        lazy="raise",
    )


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "message_id", name="uq_messages_conversation_message_id"),
        Index("ix_messages_conversation_order", "conversation_id", "seq", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    seq: Mapped[int] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(String(200))
    arguments: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    result: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    # An assistant answer the caller cut short: `text` is what they heard.
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    conversation: Mapped[Conversation] = relationship(back_populates="messages", lazy="raise")


class Ticket(Base):
    """A follow-up for a person. Keyed by call_sid but not tied to a conversation row: the ticket
    is created directly by a tool while the conversation may still be in the voice server's outbox."""

    __tablename__ = "tickets"
    __table_args__ = (Index("ux_tickets_idempotency_key", "idempotency_key", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    phone_number: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)
    requested_time: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Chosen by the creator (e.g. `<call_sid>:transfer-callback:<id>`): a creation repeated with the same key
    # (a retried webhook, an outbox redelivery) returns this ticket instead of making another.
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
