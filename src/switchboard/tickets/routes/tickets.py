"""Tickets (callbacks) created by the voice agent's tools, read by operators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from switchboard.logs import get_logger, mask_phone
from switchboard.tickets.context import AppServerContext
from switchboard.tickets.repository import TicketRepository
from switchboard.tickets.routes.dependencies import app_context, require_service_token, ticket_repository
from switchboard.tickets.schemas import CallSid, TicketCreate, TicketList, TicketView, ticket_view
from switchboard.tickets.ui.scope import TenantScope, api_tenant_scope

log = get_logger("switchboard.tickets")
router = APIRouter(prefix="/api/tickets", tags=["tickets"])

Repository = Annotated[TicketRepository, Depends(ticket_repository)]
Context = Annotated[AppServerContext, Depends(app_context)]
Scope = Annotated[TenantScope, Depends(api_tenant_scope)]


@router.get("")
async def list_tickets(
    scope: Scope,
    call_sid: Annotated[CallSid | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> TicketList:
    """Contract §3: the tickets of one call (or the newest ones), newest first, with their helpdesk copies
    (`external`). An API key sees its tenant's only; a viewer's key gets the phone number masked."""
    repository = TicketRepository(scope.session)
    rows = await repository.list_tickets(call_sid=call_sid, limit=limit)
    views = await repository.with_external([ticket_view(t) for t in rows])
    if not scope.principal.sees_full_numbers:
        for view in views:
            view.phone_number = mask_phone(view.phone_number)
    return TicketList(tickets=views)


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_service_token)])
async def create_ticket(body: TicketCreate, repository: Repository, context: Context, response: Response) -> TicketView:
    """Create an open ticket (201); the phone number is kept in full (a callback needs it). With an
    `idempotency_key` already used, nothing is created and the first ticket is answered (200)."""
    ticket, is_new = await repository.create_ticket(body, created_at=context.clock.wall())
    if not is_new:
        response.status_code = status.HTTP_200_OK
        log.info("ticket.repeated", ticket_id=ticket.id, call_sid=body.call_sid, kind=body.kind)
        return ticket_view(ticket)
    context.wake_integrations()
    context.metrics.tickets_created.labels(kind=body.kind).inc()
    log.info("ticket.created", ticket_id=ticket.id, call_sid=body.call_sid, kind=body.kind)
    return ticket_view(ticket)
