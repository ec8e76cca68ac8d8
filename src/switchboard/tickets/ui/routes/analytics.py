"""/ui/analytics: calls and cost per day, end reasons, turn latency, transfer and callback rates."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from switchboard.tickets.ui.context import dashboard_context
from switchboard.tickets.ui.queries import analytics
from switchboard.tickets.ui.routes.forms import render
from switchboard.tickets.ui.scope import TenantScope, ui_tenant_scope

router = APIRouter(prefix="/ui", tags=["dashboard"])
Scope = Annotated[TenantScope, Depends(ui_tenant_scope)]


@router.get("/analytics", response_model=None)
async def analytics_page(request: Request, scope: Scope, days: Annotated[int, Query(ge=1, le=366)] = 14) -> Response:
    last_day = dashboard_context(request).clock.wall().date()
    first_day = last_day - timedelta(days=days - 1)
    figures = await analytics(scope.session, first_day=first_day, last_day=last_day)
    max_calls = max((d.calls for d in figures.days), default=0) or 1
    max_cost = max((d.cost for d in figures.days), default=0.0) or 1.0
    max_reason = max((n for _, n in figures.end_reasons), default=0) or 1
    return render(request, "analytics.html", scope.principal, figures=figures, days=days, first_day=first_day,
                  last_day=last_day, max_calls=max_calls, max_cost=max_cost, max_reason=max_reason)
