"""SQLAlchemy queries of the App server; one repository per request session.

Writes are race-free on both backends: rows are created with INSERT ... ON CONFLICT DO NOTHING
and then read or updated, so two requests for the same call_sid or message_id never fail on a
unique constraint. Each public method is one transaction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.logs import mask_phone
from switchboard.pricing import PriceTable
from switchboard.tickets.errors import MessageConflict
from switchboard.tickets.figures import call_figures
from switchboard.tickets.integrations.events import EventRecorder
from switchboard.tickets.integrations.external import add_external
from switchboard.tickets.models import Conversation, Message, Ticket
from switchboard.tickets.schemas import (
    ConversationEnd,
    ConversationOpen,
    MessageAdd,
    TicketCreate,
    TicketView,
)

LIVE = "live"
ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Stored:
    """What a write produced: the conversation (with its ordered messages) and whether it was new."""

    conversation: Conversation
    messages: list[Message]
    is_new: bool


class ConversationRepository:
    def __init__(
        self, session: AsyncSession, *, prices: PriceTable | None = None, model: str = "",
        events: EventRecorder | None = None,
    ) -> None:
        self._session = session
        self._prices = prices
        self._model = model
        self._events = events

    def _insert(self, table: type[Conversation] | type[Message]) -> postgresql.Insert | sqlite.Insert:
        if self._session.get_bind().dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def _ensure_conversation(self, call_sid: str, *, started_at: datetime | None) -> tuple[int, bool]:
        """Return (conversation id, whether this call created it as a placeholder)."""
        by_call_sid = select(Conversation.id).where(Conversation.call_sid == call_sid)
        existing_id = await self._session.scalar(by_call_sid)
        if existing_id is not None:
            return existing_id, False
        created_id = (
            await self._session.execute(
                self._insert(Conversation)
                .values(call_sid=call_sid, status=LIVE, started_at=started_at)
                .on_conflict_do_nothing(index_elements=["call_sid"])
                .returning(Conversation.id)
            )
        ).scalar_one_or_none()
        if created_id is not None:
            return created_id, True
        # Another request created it between our select and insert.
        raced_id = await self._session.scalar(by_call_sid)
        assert raced_id is not None
        return raced_id, False

    async def _load(self, conversation_id: int) -> tuple[Conversation, list[Message]]:
        conversation = await self._session.get_one(Conversation, conversation_id, populate_existing=True)
        messages = await self._ordered_messages([conversation_id])
        return conversation, messages.get(conversation_id, [])

    async def _ordered_messages(self, conversation_ids: list[int]) -> dict[int, list[Message]]:
        rows = await self._session.scalars(
            select(Message)
            .where(Message.conversation_id.in_(conversation_ids))
            .order_by(Message.conversation_id, Message.seq, Message.at, Message.id)
        )
        grouped: dict[int, list[Message]] = {}
        for row in rows:
            grouped.setdefault(row.conversation_id, []).append(row)
        return grouped

    async def open_conversation(self, call_sid: str, request: ConversationOpen) -> Stored:
        """Create or fill in a conversation. An ended conversation stays ended."""
        async with self._session.begin():
            conversation_id, is_new = await self._ensure_conversation(call_sid, started_at=request.started_at)
            await self._session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id)
                .values(
                    tenant=request.tenant,
                    caller_masked=mask_phone(request.caller),
                    started_at=request.started_at,
                    trace_id=request.trace_id,
                )
            )
            conversation, messages = await self._load(conversation_id)
        return Stored(conversation, messages, is_new)

    async def add_message(self, call_sid: str, request: MessageAdd) -> tuple[Message, bool]:
        """Store a message, or replace the text of the one with the same message_id.

        Raises:
            MessageConflict: the message_id is already used by a message with another role.
        """
        async with self._session.begin():
            conversation_id, _ = await self._ensure_conversation(call_sid, started_at=request.at)
            values: dict[str, Any] = request.model_dump()
            created = (
                await self._session.scalars(
                    self._insert(Message)
                    .values(conversation_id=conversation_id, **values)
                    .on_conflict_do_nothing(index_elements=["conversation_id", "message_id"])
                    .returning(Message)
                )
            ).one_or_none()
            if created is not None:
                return created, True
            existing = await self._session.scalar(
                select(Message).where(
                    Message.conversation_id == conversation_id, Message.message_id == request.message_id
                )
            )
            assert existing is not None
            if existing.role != request.role:
                raise MessageConflict(
                    f"message_id {request.message_id!r} is already a {existing.role} message, not {request.role}"
                )
            existing.text = request.text
            # A tool message may be re-sent once its result is in; fields left out keep their value.
            for field in ("name", "arguments", "result", "duration_ms"):
                value = getattr(request, field)
                if value is not None:
                    setattr(existing, field, value)
            # The replacement of an answer the caller cut short is marked so; it never un-marks.
            existing.interrupted = existing.interrupted or request.interrupted
            await self._session.flush()
            return existing, False

    async def end_conversation(self, call_sid: str, request: ConversationEnd) -> Stored:
        """Mark a conversation ended with its totals; repeating it overwrites with the new values."""
        async with self._session.begin():
            started_at = request.ended_at - timedelta(seconds=request.duration_s)
            conversation_id, is_new = await self._ensure_conversation(call_sid, started_at=started_at)
            previous_status = await self._session.scalar(
                select(Conversation.status).where(Conversation.id == conversation_id).with_for_update()
            )
            await self._session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id)
                .values(
                    status=ENDED,
                    end_reason=request.end_reason,
                    ended_at=request.ended_at,
                    duration_s=request.duration_s,
                    usage=request.usage.model_dump(),
                    turns=request.turns,
                    summary=request.summary,
                    **asdict(call_figures(request.turns, request.usage.model_dump(), self._prices, self._model)),
                )
            )
            conversation, messages = await self._load(conversation_id)
            # The call counts as ended the first time its end is recorded; a repeated end is not a new event.
            if self._events is not None and previous_status != ENDED:
                await self._events.call_ended(self._session, conversation, messages)
        return Stored(conversation, messages, is_new)

    async def list_conversations(
        self, *, call_sid: str | None, limit: int
    ) -> list[tuple[Conversation, list[Message]]]:
        """Conversations newest first (by id), each with its messages in conversation order."""
        async with self._session.begin():
            query = select(Conversation).order_by(Conversation.id.desc()).limit(limit)
            if call_sid is not None:
                query = query.where(Conversation.call_sid == call_sid)
            conversations = list(await self._session.scalars(query))
            messages = await self._ordered_messages([c.id for c in conversations]) if conversations else {}
        return [(c, messages.get(c.id, [])) for c in conversations]


class TicketRepository:
    def __init__(self, session: AsyncSession, events: EventRecorder | None = None) -> None:
        self._session = session
        self._events = events

    async def create_ticket(self, request: TicketCreate, *, created_at: datetime) -> tuple[Ticket, bool]:
        """The new ticket and True; or, for an `idempotency_key` seen before, that ticket and False."""
        key = request.idempotency_key
        if key is not None:
            existing = await self._by_idempotency_key(key)
            if existing is not None:
                return existing, False
        try:
            async with self._session.begin():
                ticket = Ticket(
                    call_sid=request.call_sid,
                    kind=request.kind,
                    phone_number=request.phone_number.strip(),
                    reason=request.reason,
                    requested_time=request.requested_time,
                    status="open",
                    created_at=created_at,
                    idempotency_key=key,
                )
                self._session.add(ticket)
                await self._session.flush()
                if self._events is not None:
                    await self._events.ticket_created(self._session, ticket)
        except IntegrityError:
            # Two creations with one key raced (two replicas, a retry during the first): the other won.
            existing = await self._by_idempotency_key(key) if key is not None else None
            if existing is None:
                raise
            return existing, False
        return ticket, True

    async def _by_idempotency_key(self, key: str) -> Ticket | None:
        async with self._session.begin():
            found: Ticket | None = await self._session.scalar(select(Ticket).where(Ticket.idempotency_key == key))
            return found

    async def with_external(self, views: list[TicketView]) -> list[TicketView]:
        """The views with their helpdesk copies (`external`) and helpdesk errors filled in."""
        async with self._session.begin():
            return await add_external(self._session, views)

    async def list_tickets(self, *, call_sid: str | None, limit: int) -> list[Ticket]:
        """Tickets newest first."""
        async with self._session.begin():
            query = select(Ticket).order_by(Ticket.id.desc()).limit(limit)
            if call_sid is not None:
                query = query.where(Ticket.call_sid == call_sid)
            return list(await self._session.scalars(query))
