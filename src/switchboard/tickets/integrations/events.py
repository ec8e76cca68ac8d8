"""Recording `call.ended` and `ticket.created` as rows, in the transaction that records the call or ticket.

The event's body is the webhook payload (`{"type", "timestamp", "data"}`, Standard Webhooks' envelope),
built once here so every endpoint and every retry gets the same bytes. `call.ended` carries the
conversation exactly as `GET /api/conversations` shows it and the call's tickets as `GET /api/tickets`
shows them. Nothing here waits on the network: the worker (delivery.py) does the sending.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.clock import Clock
from switchboard.tickets.integrations.config import HELPDESKS, IntegrationsDirectory
from switchboard.tickets.integrations.external import add_external
from switchboard.tickets.integrations.models import EVENT_NEW, PENDING, IntegrationDelivery, IntegrationEvent
from switchboard.tickets.models import Conversation, Message, Ticket
from switchboard.tickets.schemas import conversation_view, ticket_view

CALL_ENDED = "call.ended"
TICKET_CREATED = "ticket.created"


def encode_body(event_type: str, occurred_at: datetime, data: dict[str, Any]) -> str:
    return json.dumps(
        {"type": event_type, "timestamp": occurred_at.isoformat(), "data": data},
        separators=(",", ":"), ensure_ascii=False,
    )


class EventRecorder:
    """Called by the repositories inside their transaction; `wake` tells the local worker there is work."""

    def __init__(self, directory: IntegrationsDirectory, clock: Clock) -> None:
        self._directory = directory
        self._clock = clock

    def _is_wanted(self, tenant: str | None, event_type: str) -> bool:
        # Unknown tenant or configuration not loaded yet: record, and let the fan-out decide later.
        if tenant is None or not self._directory.is_loaded:
            return True
        integrations = self._directory.get(tenant)
        return integrations is not None and bool(integrations.endpoints_for(event_type))

    async def call_ended(self, session: AsyncSession, conversation: Conversation, messages: list[Message]) -> bool:
        """Record `call.ended` for a conversation that has just ended; returns whether a row was written.

        Also makes the call's waiting helpdesk deliveries due: they wait for the end to carry its summary."""
        now = self._clock.wall()
        await session.execute(
            update(IntegrationDelivery)
            .where(
                IntegrationDelivery.call_sid == conversation.call_sid,
                IntegrationDelivery.kind.in_(HELPDESKS),
                IntegrationDelivery.status == PENDING,
                IntegrationDelivery.attempts == 0,
            )
            .values(next_attempt_at=now)
        )
        if not self._is_wanted(conversation.tenant, CALL_ENDED):
            return False
        tickets = list(await session.scalars(
            select(Ticket).where(Ticket.call_sid == conversation.call_sid).order_by(Ticket.id.desc())
        ))
        views = await add_external(session, [ticket_view(t) for t in tickets])
        data = {
            "conversation": conversation_view(conversation, messages).model_dump(mode="json"),
            "tickets": [v.model_dump(mode="json") for v in views],
        }
        occurred_at = conversation.ended_at or now
        session.add(IntegrationEvent(
            event_type=CALL_ENDED, call_sid=conversation.call_sid, ticket_id=None, tenant=conversation.tenant,
            body=encode_body(CALL_ENDED, occurred_at, data), status=EVENT_NEW, occurred_at=occurred_at,
            next_check_at=now,
        ))
        return True

    async def ticket_created(self, session: AsyncSession, ticket: Ticket, tenant: str | None = None) -> bool:
        """Record `ticket.created` (webhooks and helpdesks); `tenant` None: taken from the call's conversation,
        or resolved by the fan-out once the conversation is known."""
        now = self._clock.wall()
        if tenant is None:
            tenant = await session.scalar(select(Conversation.tenant).where(Conversation.call_sid == ticket.call_sid))
        if not self._is_wanted(tenant, TICKET_CREATED):
            return False
        view = ticket_view(ticket)
        session.add(IntegrationEvent(
            event_type=TICKET_CREATED, call_sid=ticket.call_sid, ticket_id=ticket.id, tenant=tenant,
            body=encode_body(TICKET_CREATED, ticket.created_at, {"ticket": view.model_dump(mode="json")}),
            status=EVENT_NEW, occurred_at=ticket.created_at, next_check_at=now,
        ))
        return True
