"""`GET /voiceagent/integrations/`: every tenant's `integrations:` as loaded, for the App server that runs them.

Values are served as written: `${VAR}` stays unexpanded (the App server expands from its own environment
when it sends). The answer carries a version (an ETag over its content), so a poll that finds nothing
changed costs a 304 and no body.
"""

from __future__ import annotations

import hashlib
import json

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from switchboard.knowledge.context import SessionDep
from switchboard.knowledge.models import TenantIntegrations

router = APIRouter()


@router.get("/integrations/", response_model=None)
async def list_integrations(request: Request, session: SessionDep) -> Response:
    rows = await session.scalars(select(TenantIntegrations).order_by(TenantIntegrations.tenant_key))
    tenants = {row.tenant_key: row.config for row in rows}
    body = json.dumps({"tenants": tenants}, sort_keys=True, separators=(",", ":")).encode()
    version = hashlib.sha256(body).hexdigest()[:32]
    etag = f'"{version}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(content=body, media_type="application/json", headers=headers)
