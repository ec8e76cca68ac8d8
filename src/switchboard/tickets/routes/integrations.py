"""Integration deliveries per endpoint (contract §9): sent, failed, pending, last error; re-enabling one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import update

from switchboard.logs import get_logger
from switchboard.tickets.context import AppServerContext
from switchboard.tickets.errors import EndpointNotFound
from switchboard.tickets.integrations.models import IntegrationEndpoint
from switchboard.tickets.integrations.stats import endpoint_stats
from switchboard.tickets.routes.dependencies import app_context, require_service_token
from switchboard.tickets.schemas import UtcTime
from switchboard.tickets.ui.scope import TenantScope, api_tenant_scope

log = get_logger("switchboard.tickets")
router = APIRouter(prefix="/api/integrations", tags=["integrations"])

Context = Annotated[AppServerContext, Depends(app_context)]
Scope = Annotated[TenantScope, Depends(api_tenant_scope)]
TenantKey = Annotated[str, Query(min_length=1, max_length=200)]


class EndpointView(BaseModel):
    tenant: str
    endpoint: str
    kind: str
    label: str
    sent: int
    failed: int
    pending: int
    in_flight: int
    last_error: str | None
    last_error_at: UtcTime | None
    last_success_at: UtcTime | None
    disabled: bool
    disabled_reason: str | None


class EndpointList(BaseModel):
    endpoints: list[EndpointView]


@router.get("/endpoints")
async def list_endpoints(scope: Scope, tenant: TenantKey | None = None) -> EndpointList:
    """Every webhook and helpdesk endpoint that has had a delivery, with its figures. An API key sees its
    tenant's only (the scope's session filters the rows); `tenant` narrows further."""
    async with scope.session.begin():
        rows = await endpoint_stats(scope.session, tenant=tenant)
    return EndpointList(endpoints=[
        EndpointView(
            tenant=r.tenant, endpoint=r.endpoint_key, kind=r.kind, label=r.label, sent=r.sent, failed=r.failed,
            pending=r.pending, in_flight=r.in_flight, last_error=r.last_error, last_error_at=r.last_error_at,
            last_success_at=r.last_success_at, disabled=r.disabled_at is not None, disabled_reason=r.disabled_reason,
        )
        for r in rows
    ])


@router.post("/endpoints/enable", dependencies=[Depends(require_service_token)])
async def enable_endpoint(context: Context, tenant: TenantKey, endpoint: TenantKey) -> dict[str, bool]:
    """Re-enable an endpoint disabled by a 410; new events reach it again (those refused meanwhile do not)."""
    async with context.sessions() as session, session.begin():
        result = await session.execute(
            update(IntegrationEndpoint)
            .where(IntegrationEndpoint.tenant == tenant, IntegrationEndpoint.endpoint_key == endpoint)
            .values(disabled_at=None, disabled_reason=None)
        )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise EndpointNotFound("no such endpoint for this tenant")
    log.info("integration_endpoint.enabled", tenant=tenant, endpoint=endpoint)
    return {"enabled": True}
