"""/ui/tickets: callbacks, open ones first, and marking one done (POST, with the CSRF token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from switchboard.logs import get_logger, mask_phone
from switchboard.tickets.ui.accounts import audit
from switchboard.tickets.ui.context import dashboard_context
from switchboard.tickets.ui.errors import NotFound
from switchboard.tickets.ui.queries import helpdesk_copies, list_tickets, set_ticket_status
from switchboard.tickets.ui.routes.forms import check_csrf, render
from switchboard.tickets.ui.scope import TenantScope, ui_tenant_scope

log = get_logger("switchboard.dashboard")
router = APIRouter(prefix="/ui", tags=["dashboard"])
Scope = Annotated[TenantScope, Depends(ui_tenant_scope)]
PAGE_SIZE = 100
STATUSES = ("open", "done")


@router.get("/tickets", response_model=None)
async def tickets_page(request: Request, scope: Scope, page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> Response:
    rows = await list_tickets(scope.session, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    shows_number = scope.principal.sees_full_numbers
    numbers = {row.ticket.id: row.ticket.phone_number if shows_number else mask_phone(row.ticket.phone_number)
               for row in rows}
    shown = rows[:PAGE_SIZE]
    helpdesk = await helpdesk_copies(scope.session, [row.ticket for row in shown])
    return render(request, "tickets.html", scope.principal, rows=shown, numbers=numbers, page=page,
                  has_next=len(rows) > PAGE_SIZE, helpdesk=helpdesk)


@router.post("/tickets/{ticket_id}/status", response_model=None)
async def change_ticket_status(
    request: Request, scope: Scope, ticket_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    status: Annotated[str, Form(pattern="^(open|done)$")],
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    check_csrf(scope.principal, csrf_token)
    ticket = await set_ticket_status(scope.session, ticket_id, status)
    if ticket is None:
        raise NotFound(f"no ticket {ticket_id}")
    context = dashboard_context(request)
    async with scope.session.begin():
        audit(scope.session, at=context.clock.wall(), actor=scope.principal.name, action="ticket.status_changed",
              tenant=scope.principal.tenant, subject=str(ticket_id), detail={"status": status})
    log.info("dashboard.ticket_status_changed", ticket_id=ticket_id, status=status)
    return RedirectResponse(f"/ui/tickets#ticket-{ticket_id}", status_code=303)
