"""JSON shapes of the App server: write requests (docs/internal-api.md) and read views (contract §3).

Pydantic only. Times are accepted only with a zone and always rendered in UTC as `+00:00`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

from switchboard.tickets.models import Conversation, Message, Ticket


def _iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


UtcTime = Annotated[datetime, PlainSerializer(_iso_utc, return_type=str, when_used="json")]
CallSid = Annotated[str, Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Role = Literal["user", "assistant", "tool"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConversationOpen(_Request):
    """`PUT /api/conversations/{call_sid}`."""

    tenant: str = Field(min_length=1, max_length=200)
    caller: str = Field(max_length=80)
    started_at: AwareDatetime
    trace_id: str | None = Field(default=None, max_length=200)
    # Only "live": a conversation's status moves forward, and `end` is how it ends.
    status: Literal["live"] = "live"


class MessageAdd(_Request):
    """`POST /api/conversations/{call_sid}/messages`."""

    message_id: str = Field(min_length=1, max_length=200)
    role: Role
    text: str = Field(max_length=100_000)
    at: AwareDatetime
    seq: int = Field(ge=0, le=2**31 - 1)
    name: str | None = Field(default=None, max_length=200)
    arguments: dict[str, Any] | None = None
    result: str | None = Field(default=None, max_length=100_000)
    duration_ms: float | None = Field(default=None, ge=0)
    interrupted: bool = False


class Usage(BaseModel):
    """Token usage; the vendors' detail fields (cached tokens, audio tokens, ...) pass through."""

    model_config = ConfigDict(extra="allow")

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)


class ConversationEnd(_Request):
    """`POST /api/conversations/{call_sid}/end`."""

    end_reason: str = Field(min_length=1, max_length=100)
    ended_at: AwareDatetime
    duration_s: float = Field(ge=0)
    usage: Usage = Field(default_factory=Usage)
    turns: list[dict[str, Any]] = Field(default_factory=list)
    summary: str | None = Field(default=None, max_length=100_000)


class TicketCreate(_Request):
    """`POST /api/tickets`."""

    call_sid: CallSid
    kind: Literal["callback"]
    phone_number: str = Field(min_length=3, max_length=40, pattern=r"^\+?[0-9][0-9 ().\-]*$")
    reason: str = Field(min_length=1, max_length=10_000)
    requested_time: str | None = Field(default=None, max_length=200)
    # Optional: the same key again returns the ticket it first created (200) instead of a new one (201).
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")


class MessageView(BaseModel):
    message_id: str
    role: Role
    text: str
    at: UtcTime
    seq: int
    name: str | None = None
    arguments: dict[str, Any] | None = None
    result: str | None = None
    duration_ms: float | None = None
    interrupted: bool = False


class ConversationView(BaseModel):
    id: int
    call_sid: str
    tenant: str | None
    caller: str | None
    status: Literal["live", "ended"]
    end_reason: str | None
    started_at: UtcTime | None
    ended_at: UtcTime | None
    duration_s: float | None
    trace_id: str | None
    usage: Usage
    summary: str | None
    messages: list[MessageView]
    turns: list[dict[str, Any]]


class ConversationList(BaseModel):
    conversations: list[ConversationView]


class ExternalRef(BaseModel):
    """Contract §3/§9: the ticket as created in a helpdesk."""

    system: Literal["freshdesk", "zendesk"]
    id: str
    url: str | None


class IntegrationProblem(BaseModel):
    """A helpdesk that has not (yet) taken the ticket: its last error, and whether we still retry."""

    system: Literal["freshdesk", "zendesk"]
    status: Literal["retrying", "failed"]
    error: str
    at: UtcTime | None


class TicketView(BaseModel):
    id: int
    call_sid: str
    kind: str
    phone_number: str
    reason: str
    requested_time: str | None
    status: str
    created_at: UtcTime
    external: list[ExternalRef] = Field(default_factory=list)
    integration_errors: list[IntegrationProblem] = Field(default_factory=list)


class TicketList(BaseModel):
    tickets: list[TicketView]


def message_view(row: Message) -> MessageView:
    view = MessageView(
        message_id=row.message_id, role=row.role, text=row.text, at=row.at, seq=row.seq,  # type: ignore[arg-type]
        interrupted=bool(row.interrupted),
    )
    if row.role == "tool":
        view.name, view.arguments, view.result, view.duration_ms = (
            row.name, row.arguments, row.result, row.duration_ms,
        )
    return view


def conversation_view(row: Conversation, messages: list[Message]) -> ConversationView:
    return ConversationView(
        id=row.id,
        call_sid=row.call_sid,
        tenant=row.tenant,
        caller=row.caller_masked,
        status=row.status,  # type: ignore[arg-type]
        end_reason=row.end_reason,
        started_at=row.started_at,
        ended_at=row.ended_at,
        duration_s=row.duration_s,
        trace_id=row.trace_id,
        usage=Usage.model_validate(row.usage or {}),
        summary=row.summary,
        messages=[message_view(m) for m in messages],
        turns=list(row.turns or []),
    )


def ticket_view(row: Ticket) -> TicketView:
    return TicketView(
        id=row.id,
        call_sid=row.call_sid,
        kind=row.kind,
        phone_number=row.phone_number,
        reason=row.reason,
        requested_time=row.requested_time,
        status=row.status,
        created_at=row.created_at,
    )
