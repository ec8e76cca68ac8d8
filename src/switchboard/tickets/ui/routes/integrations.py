"""/ui/integrations: each webhook and helpdesk endpoint of the tenant, with its deliveries (contract §9)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from switchboard.tickets.integrations.stats import endpoint_stats
from switchboard.tickets.ui.routes.forms import render
from switchboard.tickets.ui.scope import TenantScope, ui_tenant_scope

router = APIRouter(prefix="/ui", tags=["dashboard"])
Scope = Annotated[TenantScope, Depends(ui_tenant_scope)]


@router.get("/integrations", response_model=None)
async def integrations_page(request: Request, scope: Scope) -> Response:
    """Sent, failed, pending and in flight per endpoint, with the last error; the scope keeps it to the
    signed-in person's tenant (every tenant for an operator)."""
    async with scope.session.begin():
        endpoints = await endpoint_stats(scope.session, tenant=None)
    return render(request, "integrations.html", scope.principal, endpoints=endpoints)
