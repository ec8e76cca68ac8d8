"""Conversations and their messages: the voice server writes them, operators read them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from switchboard.logs import get_logger
from switchboard.tickets.context import AppServerContext
from switchboard.tickets.repository import ConversationRepository
from switchboard.tickets.routes.dependencies import (
    app_context,
    conversation_repository,
    require_service_token,
)
from switchboard.tickets.schemas import (
    CallSid,
    ConversationEnd,
    ConversationList,
    ConversationOpen,
    ConversationView,
    MessageAdd,
    MessageView,
    conversation_view,
    message_view,
)
from switchboard.tickets.ui.scope import TenantScope, api_tenant_scope

log = get_logger("switchboard.tickets")
router = APIRouter(prefix="/api/conversations", tags=["conversations"])

Repository = Annotated[ConversationRepository, Depends(conversation_repository)]
Scope = Annotated[TenantScope, Depends(api_tenant_scope)]
ServiceOnly = [Depends(require_service_token)]
Context = Annotated[AppServerContext, Depends(app_context)]
CallSidPath = Annotated[str, Path(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


@router.get("")
async def list_conversations(
    scope: Scope,
    call_sid: Annotated[CallSid | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ConversationList:
    """Contract §3: the conversation of one call (or the newest ones), messages in order. An API key
    sees its tenant's only; a viewer's key gets tool messages without arguments and results."""
    rows = await ConversationRepository(scope.session).list_conversations(call_sid=call_sid, limit=limit)
    views = [conversation_view(c, m) for c, m in rows]
    if not scope.principal.sees_tool_details:
        for view in views:
            for message in view.messages:
                message.arguments = message.result = None
    return ConversationList(conversations=views)


@router.put("/{call_sid}", dependencies=ServiceOnly)
async def open_conversation(
    call_sid: CallSidPath, body: ConversationOpen, repository: Repository, response: Response
) -> ConversationView:
    """Open or update a conversation: 201 when it is new, 200 when it existed (even as a placeholder)."""
    stored = await repository.open_conversation(call_sid, body)
    response.status_code = status.HTTP_201_CREATED if stored.is_new else status.HTTP_200_OK
    log.info("conversation.opened", call_sid=call_sid, tenant=body.tenant, is_new=stored.is_new)
    return conversation_view(stored.conversation, stored.messages)


@router.post("/{call_sid}/messages", dependencies=ServiceOnly)
async def add_message(
    call_sid: CallSidPath, body: MessageAdd, repository: Repository, context: Context, response: Response
) -> MessageView:
    """Append a message (201), or replace the text of a known message_id (200).

    A message for an unknown call_sid creates a placeholder conversation, filled in by the open.
    """
    message, is_new = await repository.add_message(call_sid, body)
    response.status_code = status.HTTP_201_CREATED if is_new else status.HTTP_200_OK
    context.metrics.messages_stored.labels(outcome="created" if is_new else "replaced").inc()
    log.debug("message.stored", call_sid=call_sid, role=body.role, seq=body.seq, is_new=is_new)
    return message_view(message)


@router.post("/{call_sid}/end", dependencies=ServiceOnly)
async def end_conversation(
    call_sid: CallSidPath, body: ConversationEnd, repository: Repository, context: Context
) -> ConversationView:
    """Mark the conversation ended with its totals (idempotent)."""
    stored = await repository.end_conversation(call_sid, body)
    context.wake_integrations()
    context.metrics.conversations_ended.inc()
    log.info(
        "conversation.ended",
        call_sid=call_sid,
        end_reason=body.end_reason,
        duration_s=body.duration_s,
        message_count=len(stored.messages),
    )
    return conversation_view(stored.conversation, stored.messages)
