"""What the dashboard reads and the one change it makes to tickets, on a tenant-scoped session.

No query here names a tenant: the session's scope (scope.py) limits every statement. Each function is
one transaction.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, exists, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.tickets.figures import turn_latency_ms
from switchboard.tickets.integrations.external import add_external
from switchboard.tickets.models import Conversation, Message, Ticket
from switchboard.tickets.schemas import TicketView, ticket_view

KNOWN_END_REASONS = (
    "caller_hung_up", "end_call", "transferred", "max_duration", "inactivity", "model_disconnected",
    "model_unavailable", "model_unresponsive", "server_lost", "error", "internal_error",
)
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class CallFilters:
    """The filters of /ui/calls and /ui/calls.csv; every field optional."""

    date_from: date | None = None
    date_to: date | None = None
    status: str | None = None
    end_reason: str | None = None
    caller_digits: str | None = None
    has_ticket: bool | None = None
    slower_than_ms: float | None = None
    search: str | None = None

    def as_query(self) -> dict[str, str]:
        """The filters as URL query parameters (for paging links and the CSV link)."""
        values = {
            "from": self.date_from.isoformat() if self.date_from else None,
            "to": self.date_to.isoformat() if self.date_to else None,
            "status": self.status, "end_reason": self.end_reason, "caller": self.caller_digits,
            "has_ticket": None if self.has_ticket is None else ("yes" if self.has_ticket else "no"),
            "slower_than_ms": None if self.slower_than_ms is None else f"{self.slower_than_ms:g}",
            "q": self.search,
        }
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True, slots=True)
class CallRow:
    conversation: Conversation
    has_ticket: bool


# "Has a ticket" probes the tickets table by call_sid for a conversation row the scope already
# admitted, so it names the Core table: the ORM entity would add the tenant criteria a second time,
# which PostgreSQL plans as a hash of every call of the tenant on each query.
_TICKETS = Ticket.__table__


def _has_ticket(*conditions: Any) -> Any:
    return exists().where(_TICKETS.c.call_sid == Conversation.call_sid, *conditions)


# PostgreSQL plans `id IN (messages matching …)` as a walk down the newest calls, testing each one's
# messages: quick for a common word, seconds for a rare one. Below this many matching messages the
# matches are gathered first (a GIN index scan) instead.
RARE_SEARCH_HITS = 5_000


async def _search_condition(session: AsyncSession, search: str) -> Any:
    words = _WORD.findall(search)[:8]
    if not words:
        return None
    if session.get_bind().dialect.name == "sqlite":
        match = " ".join('"' + word.replace('"', '""') + '"' for word in words)
        matching = select(Message.conversation_id).where(
            Message.id.in_(text("SELECT rowid FROM messages_fts WHERE messages_fts MATCH :match").bindparams(match=match))
        )
        return Conversation.id.in_(matching)
    query = func.plainto_tsquery("simple", " ".join(words))
    matches = func.to_tsvector("simple", Message.text).op("@@")(query)
    sample = select(Message.id).where(matches).limit(RARE_SEARCH_HITS).subquery()
    hits = await session.scalar(select(func.count()).select_from(sample))
    if (hits or 0) < RARE_SEARCH_HITS:
        gathered = select(Message.conversation_id).where(matches).cte("search_hits").prefix_with("MATERIALIZED")
        return Conversation.id.in_(select(gathered.c.conversation_id))
    return Conversation.id.in_(select(Message.conversation_id).where(matches))


async def _filtered(session: AsyncSession, filters: CallFilters) -> Select[Conversation, bool]:
    query = select(Conversation, _has_ticket().label("has_ticket")).where(Conversation.tenant.is_not(None))
    if filters.date_from is not None:
        query = query.where(Conversation.started_at >= datetime.combine(filters.date_from, time(), UTC))
    if filters.date_to is not None:
        end = datetime.combine(filters.date_to + timedelta(days=1), time(), UTC)
        query = query.where(Conversation.started_at < end)
    if filters.status in {"live", "ended"}:
        query = query.where(Conversation.status == filters.status)
    if filters.end_reason:
        query = query.where(Conversation.end_reason == filters.end_reason)
    if filters.caller_digits:
        query = query.where(Conversation.caller_masked.like(f"%{filters.caller_digits}"))
    if filters.has_ticket is not None:
        query = query.where(_has_ticket() if filters.has_ticket else ~_has_ticket())
    if filters.slower_than_ms is not None:
        query = query.where(Conversation.median_turn_ms > filters.slower_than_ms)
    if filters.search:
        condition = await _search_condition(session, filters.search)
        if condition is not None:
            query = query.where(condition)
    return query.order_by(Conversation.started_at.desc(), Conversation.id.desc())


async def list_calls(session: AsyncSession, filters: CallFilters, *, limit: int, offset: int) -> list[CallRow]:
    """Newest first; asks for `limit` rows (ask one more to know whether there is a next page)."""
    async with session.begin():
        rows = await session.execute((await _filtered(session, filters)).limit(limit).offset(offset))
        return [CallRow(conversation=row[0], has_ticket=bool(row[1])) for row in rows]


async def stream_calls(session: AsyncSession, filters: CallFilters, *, batch: int = 1000) -> AsyncIterator[CallRow]:
    """Every row under the filters, newest first, fetched in batches (for the CSV export)."""
    offset = 0
    while True:
        rows = await list_calls(session, filters, limit=batch, offset=offset)
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        offset += batch


@dataclass(frozen=True, slots=True)
class CallDetail:
    conversation: Conversation
    messages: list[Message]
    tickets: list[Ticket]


async def call_detail(session: AsyncSession, call_sid: str) -> CallDetail | None:
    """The call with its messages in order and its tickets; None when absent or not this scope's."""
    async with session.begin():
        conversation = await session.scalar(
            select(Conversation).where(Conversation.call_sid == call_sid, Conversation.tenant.is_not(None))
        )
        if conversation is None:
            return None
        messages = list(await session.scalars(
            select(Message).where(Message.conversation_id == conversation.id)
            .order_by(Message.seq, Message.at, Message.id)
        ))
        tickets = list(await session.scalars(
            select(Ticket).where(Ticket.call_sid == call_sid).order_by(Ticket.id)
        ))
    return CallDetail(conversation, messages, tickets)


@dataclass(frozen=True, slots=True)
class LiveState:
    status: str
    messages: list[Message]


async def live_state(session: AsyncSession, call_sid: str, *, after_id: int) -> LiveState | None:
    """The call's status and its messages stored after row `after_id` (None when not visible)."""
    async with session.begin():
        conversation = await session.scalar(
            select(Conversation).where(Conversation.call_sid == call_sid, Conversation.tenant.is_not(None))
        )
        if conversation is None:
            return None
        messages = list(await session.scalars(
            select(Message).where(Message.conversation_id == conversation.id, Message.id > after_id)
            .order_by(Message.id)
        ))
    return LiveState(conversation.status, messages)


async def message_versions(session: AsyncSession, call_sid: str) -> dict[int, tuple[int, bool, bool]]:
    """Per message row: (text length, has a result, interrupted): enough to see a replaced message."""
    async with session.begin():
        rows = await session.execute(
            select(Message.id, func.length(Message.text), Message.result.is_not(None), Message.interrupted)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Conversation.call_sid == call_sid)
        )
        return {row[0]: (int(row[1] or 0), bool(row[2]), bool(row[3])) for row in rows}


async def messages_by_id(session: AsyncSession, ids: Sequence[int]) -> list[Message]:
    async with session.begin():
        return list(await session.scalars(select(Message).where(Message.id.in_(ids)).order_by(Message.id)))


@dataclass(frozen=True, slots=True)
class TicketRow:
    ticket: Ticket
    caller_masked: str | None


async def list_tickets(session: AsyncSession, *, limit: int, offset: int) -> list[TicketRow]:
    """Open tickets first, then newest first."""
    async with session.begin():
        rows = await session.execute(
            select(Ticket, Conversation.caller_masked)
            .outerjoin(Conversation, Conversation.call_sid == Ticket.call_sid)
            .order_by((Ticket.status == "open").desc(), Ticket.id.desc())
            .limit(limit).offset(offset)
        )
        return [TicketRow(ticket, caller) for ticket, caller in rows]


async def helpdesk_copies(session: AsyncSession, tickets: Sequence[Ticket]) -> dict[int, TicketView]:
    """Per ticket id: its helpdesk copies (`external`) and helpdesk errors, as the read API returns them."""
    async with session.begin():
        views = await add_external(session, [ticket_view(t) for t in tickets])
    return {view.id: view for view in views}


async def set_ticket_status(session: AsyncSession, ticket_id: int, status: str) -> Ticket | None:
    """Change a ticket's status; None when it is absent or not this scope's."""
    async with session.begin():
        ticket = await session.scalar(select(Ticket).where(Ticket.id == ticket_id))
        if ticket is None:
            return None
        ticket.status = status
    return ticket


@dataclass(slots=True)
class DayFigures:
    day: date
    calls: int = 0
    cost: float = 0.0


@dataclass(slots=True)
class Analytics:
    days: list[DayFigures] = field(default_factory=list)
    end_reasons: list[tuple[str, int]] = field(default_factory=list)
    calls: int = 0
    median_turn_ms: float | None = None
    p90_turn_ms: float | None = None
    measured_turns: int = 0
    transfer_rate: float | None = None
    callback_rate: float | None = None
    cost: float = 0.0
    by_tenant: list[tuple[str, int, float]] = field(default_factory=list)


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


async def analytics(session: AsyncSession, *, first_day: date, last_day: date) -> Analytics:
    """Figures of the calls started from `first_day` to `last_day` (UTC days, inclusive)."""
    start = datetime.combine(first_day, time(), UTC)
    end = datetime.combine(last_day + timedelta(days=1), time(), UTC)
    with_callback = _has_ticket(_TICKETS.c.kind == "callback")
    async with session.begin():
        rows = (await session.execute(
            select(Conversation.started_at, Conversation.end_reason, Conversation.cost, Conversation.turns,
                   Conversation.tenant, with_callback)
            .where(Conversation.started_at >= start, Conversation.started_at < end, Conversation.tenant.is_not(None))
        )).all()
    result = Analytics()
    days: dict[date, DayFigures] = {}
    day = first_day
    while day <= last_day:
        days[day] = DayFigures(day)
        day += timedelta(days=1)
    reasons: Counter[str] = Counter()
    tenants: defaultdict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    latencies: list[float] = []
    transfers = callbacks = 0
    for started_at, end_reason, cost, turns, tenant, has_callback in rows:
        figures = days.get(started_at.date())
        if figures is not None:
            figures.calls += 1
            figures.cost += cost or 0.0
        reasons[end_reason or "live"] += 1
        transfers += end_reason == "transferred"
        callbacks += bool(has_callback)
        tenants[tenant][0] += 1
        tenants[tenant][1] += cost or 0.0
        for turn in turns or []:
            ms = turn_latency_ms(turn) if isinstance(turn, dict) else None
            if ms is not None:
                latencies.append(ms)
    result.days = list(days.values())
    result.calls = len(rows)
    result.cost = sum(d.cost for d in result.days)
    result.end_reasons = reasons.most_common()
    result.by_tenant = sorted((t, int(v[0]), float(v[1])) for t, v in tenants.items())
    if latencies:
        latencies.sort()
        result.median_turn_ms = statistics.median(latencies)
        result.p90_turn_ms = _percentile(latencies, 0.9)
        result.measured_turns = len(latencies)
    if rows:
        result.transfer_rate = transfers / len(rows)
        result.callback_rate = callbacks / len(rows)
    return result
