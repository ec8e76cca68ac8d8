"""/ui/admin: a tenant admin (or an operator) manages people and API keys, and reads the audit log.

Every change is a POST with the session's CSRF token and is audited. Through the tenant-scoped session
an admin sees and changes only their own tenant's users and keys; only an operator adds operators.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from switchboard.logs import get_logger
from switchboard.tickets.ui.accounts import AccountStore, CreatedKey, check_password
from switchboard.tickets.ui.auth import TENANT_ROLES, hash_password
from switchboard.tickets.ui.context import dashboard_context
from switchboard.tickets.ui.errors import AccountError, Forbidden
from switchboard.tickets.ui.routes.forms import check_csrf, render
from switchboard.tickets.ui.scope import TenantScope, ui_tenant_scope

log = get_logger("switchboard.dashboard")
router = APIRouter(prefix="/ui/admin", tags=["dashboard"])
Scope = Annotated[TenantScope, Depends(ui_tenant_scope)]
Csrf = Annotated[str, Form(max_length=100)]


def _require_admin(scope: TenantScope) -> AccountStore:
    if not scope.principal.may_manage:
        raise Forbidden("managing users and keys needs the admin role")
    return AccountStore(scope.session)


async def _page(request: Request, scope: TenantScope, *, status_code: int = 200, error: str | None = None,
                created_key: CreatedKey | None = None, notice: str | None = None) -> Response:
    store = _require_admin(scope)
    return render(request, "admin.html", scope.principal, status_code=status_code, users=await store.list_users(),
                  keys=await store.list_keys(), events=await store.recent_audit(100), error=error,
                  created_key=created_key, notice=notice, roles=TENANT_ROLES)


@router.get("", response_model=None)
async def admin_page(request: Request, scope: Scope) -> Response:
    return await _page(request, scope)


@router.post("/users", response_model=None)
async def add_user(
    request: Request, scope: Scope, email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1000)], role: Annotated[str, Form(max_length=16)],
    tenant: Annotated[str, Form(max_length=200)] = "", csrf_token: Csrf = "",
) -> Response:
    store = _require_admin(scope)
    check_csrf(scope.principal, csrf_token)
    principal = scope.principal
    # A tenant admin adds to their own tenant; an operator names the tenant, or adds an operator.
    target_tenant = principal.tenant if not principal.is_every_tenant else (tenant.strip() or None)
    try:
        if target_tenant is None and (role != "operator" or not principal.is_every_tenant):
            raise AccountError("name the tenant (only an operator adds operators)")
        check_password(password)
        password_hash = await asyncio.to_thread(hash_password, password)
        user = await store.add_user(email=email, tenant=target_tenant, role=role, password_hash=password_hash,
                                    now=dashboard_context(request).clock.wall(), actor=principal.name)
    except AccountError as exc:
        return await _page(request, scope, status_code=400, error=str(exc))
    log.info("dashboard.user_added", role=user.role)
    return await _page(request, scope, notice=f"Added {user.email} ({user.role}).")


@router.post("/users/remove", response_model=None)
async def remove_user(request: Request, scope: Scope, email: Annotated[str, Form(max_length=320)],
                      csrf_token: Csrf = "") -> Response:
    store = _require_admin(scope)
    check_csrf(scope.principal, csrf_token)
    try:
        await store.remove_user(email, now=dashboard_context(request).clock.wall(), actor=scope.principal.name)
    except AccountError as exc:
        return await _page(request, scope, status_code=400, error=str(exc))
    return RedirectResponse("/ui/admin", status_code=303)


@router.post("/keys", response_model=None)
async def create_key(
    request: Request, scope: Scope, role: Annotated[str, Form(max_length=16)],
    name: Annotated[str, Form(max_length=200)] = "", tenant: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Csrf = "",
) -> Response:
    store = _require_admin(scope)
    check_csrf(scope.principal, csrf_token)
    principal = scope.principal
    target_tenant = principal.tenant if not principal.is_every_tenant else tenant.strip()
    try:
        created = await store.create_key(tenant=target_tenant or "", role=role, name=name.strip() or None,
                                         now=dashboard_context(request).clock.wall(), actor=principal.name)
    except AccountError as exc:
        return await _page(request, scope, status_code=400, error=str(exc))
    return await _page(request, scope, created_key=created)


@router.post("/keys/revoke", response_model=None)
async def revoke_key(request: Request, scope: Scope, key_id: Annotated[int, Form(ge=1, le=2**31 - 1)],
                     csrf_token: Csrf = "") -> Response:
    store = _require_admin(scope)
    check_csrf(scope.principal, csrf_token)
    try:
        await store.revoke_key(key_id, now=dashboard_context(request).clock.wall(), actor=scope.principal.name)
    except AccountError as exc:
        return await _page(request, scope, status_code=400, error=str(exc))
    return RedirectResponse("/ui/admin", status_code=303)
