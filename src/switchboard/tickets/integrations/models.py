"""Tables of the integrations: events to fan out, deliveries (the queue), and per-endpoint state.

Same declarative Base as the App server's other tables, so one Alembic history covers them. A
delivery's `message_id` is its `webhook-id` (and a helpdesk's idempotency key): fixed at creation,
the same on every retry.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from switchboard.tickets.models import Base, UtcDateTime

EVENT_NEW = "new"
# Fanned out into deliveries; deleted with the last of them (retention.py).
EVENT_DONE = "done"
# Fanned out to no endpoint (none configured for it, or its call never showed a tenant).
EVENT_SKIPPED = "skipped"
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


class IntegrationEvent(Base):
    """Something happened (`call.ended`, `ticket.created`); written in the same transaction as the record.

    The worker fans an event out into one delivery per configured endpoint once the tenant is known.
    `body` is the webhook payload exactly as every endpoint receives it."""

    __tablename__ = "integration_events"
    __table_args__ = (
        Index("ix_integration_events_due", "status", "next_check_at"),
        Index("ix_integration_events_age", "status", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    call_sid: Mapped[str] = mapped_column(String(64))
    ticket_id: Mapped[int | None] = mapped_column(Integer)
    tenant: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    next_check_at: Mapped[datetime] = mapped_column(UtcDateTime)


class IntegrationDelivery(Base):
    """One event to one endpoint (a webhook URL, a Freshdesk or a Zendesk account): the queue row."""

    __tablename__ = "integration_deliveries"
    __table_args__ = (
        UniqueConstraint("message_id", name="uq_integration_deliveries_message_id"),
        Index("ix_integration_deliveries_due", "status", "next_attempt_at"),
        Index("ix_integration_deliveries_endpoint", "tenant", "endpoint_key", "status"),
        Index("ix_integration_deliveries_ticket", "ticket_id"),
        Index("ix_integration_deliveries_event", "event_id"),
        Index("ix_integration_deliveries_finished", "kind", "finished_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("integration_events.id", ondelete="CASCADE"))
    tenant: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # webhook | freshdesk | zendesk
    endpoint_key: Mapped[str] = mapped_column(String(80))
    event_type: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(64))
    call_sid: Mapped[str] = mapped_column(String(64))
    ticket_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts answered with a refusal (3xx, or a 4xx other than 408/409/410/425/429): a few, then given up.
    refusals: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # A worker's claim: nobody else attempts the row before lease_until; results are fenced by the token.
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_token: Mapped[str | None] = mapped_column(String(32))
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When it became delivered or failed (None while pending): the retention counts from here.
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # A previous attempt may have reached the helpdesk (timeout, dropped answer, 5xx): look before creating.
    is_ambiguous: Mapped[bool] = mapped_column(Boolean, default=False)
    # Helpdesks: the request body, fixed at the first attempt so a retry sends the same one.
    request_body: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(100))
    external_url: Mapped[str | None] = mapped_column(String(500))


class IntegrationEndpoint(Base):
    """Per tenant and endpoint: disabled (410 Gone) or not, and the last outcome, for the stats view."""

    __tablename__ = "integration_endpoints"
    __table_args__ = (UniqueConstraint("tenant", "endpoint_key", name="uq_integration_endpoints_tenant_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200))
    endpoint_key: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(500))
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Deliveries deleted after the retention, by outcome: `sent` and `failed` count them too.
    pruned_delivered: Mapped[int] = mapped_column(Integer, default=0)
    pruned_failed: Mapped[int] = mapped_column(Integer, default=0)
