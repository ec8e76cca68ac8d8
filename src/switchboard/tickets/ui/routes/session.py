"""Signing in and out: /ui/login (form fields `email`, `password`), POST /ui/logout.

Sign-in is rate-limited by the audit log's failed attempts in the last 15 minutes, per email and per
client address, so every App server of a deployment counts the same attempts. The login form is
protected by a double-submit token (a cookie and a form field); signed-in forms by the session's token.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from switchboard.logs import get_logger
from switchboard.tickets.ui.accounts import (
    end_session,
    find_user_for_sign_in,
    recent_failed_sign_ins,
    record_sign_in,
)
from switchboard.tickets.ui.auth import sign_cookie, verify_password
from switchboard.tickets.ui.context import dashboard_context
from switchboard.tickets.ui.errors import Forbidden, TooManySignIns
from switchboard.tickets.ui.routes.forms import check_csrf, client_ip, is_https, render
from switchboard.tickets.ui.scope import SESSION_COOKIE, TenantScope, ui_principal, ui_tenant_scope

log = get_logger("switchboard.dashboard")
router = APIRouter(prefix="/ui", tags=["dashboard"])
LOGIN_CSRF_COOKIE = "sb_login_csrf"
RATE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_ADDRESS = 20

Scope = Annotated[TenantScope, Depends(ui_tenant_scope)]


def _safe_next(next_path: str | None) -> str:
    if next_path and next_path.startswith("/ui/") and not next_path.startswith("//") and "\\" not in next_path:
        return next_path
    return "/ui/calls"


def _login_page(request: Request, *, next_path: str, error: str | None = None, status_code: int = 200,
                email: str = "") -> Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", None, status_code=status_code, csrf_token=token, next_path=next_path,
                      error=error, email=email)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=is_https(request),
                        path="/ui/login", max_age=3600)
    return response


@router.get("/login", response_model=None)
async def login_form(request: Request, next_path: Annotated[str | None, Query(alias="next")] = None) -> Response:
    if await ui_principal(request) is not None:
        return RedirectResponse(_safe_next(next_path), status_code=303)
    return _login_page(request, next_path=_safe_next(next_path))


@router.post("/login", response_model=None)
async def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1000)],
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    next_path: Annotated[str, Form(alias="next", max_length=2000)] = "/ui/calls",
) -> Response:
    context = dashboard_context(request)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), csrf_token.encode()):
        raise Forbidden("the sign-in form expired or was not sent from this dashboard; reload the page")
    email = email.strip().lower()
    address = client_ip(request)
    now = context.clock.wall()
    async with context.sessions() as session:
        by_email, by_address = await recent_failed_sign_ins(session, email=email, client_ip=address,
                                                            since=now - RATE_WINDOW)
        if by_email >= context.sign_in_attempts_per_15_min or by_address >= MAX_FAILURES_PER_ADDRESS:
            log.warning("dashboard.sign_in_limited", client_ip=address)
            raise TooManySignIns("too many failed sign-ins; wait 15 minutes and try again")
        user = await find_user_for_sign_in(session, email)
        # Argon2 is ~50 ms of CPU by design: off the event loop.
        ok = await asyncio.to_thread(verify_password, user.password_hash if user else None, password)
        token = await record_sign_in(session, user=user, email=email, succeeded=ok, client_ip=address, now=now,
                                     ttl=timedelta(seconds=context.session_ttl_s))
    if token is None:
        log.info("dashboard.sign_in_failed", client_ip=address)
        return _login_page(request, next_path=_safe_next(next_path), error="Wrong email or password.",
                           status_code=401, email=email)
    log.info("dashboard.signed_in", client_ip=address)
    response = RedirectResponse(_safe_next(next_path), status_code=303)
    response.set_cookie(SESSION_COOKIE, sign_cookie(context.session_secret, token), httponly=True, samesite="lax",
                        secure=is_https(request), path="/ui", max_age=int(context.session_ttl_s))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/ui/login")
    return response


@router.post("/logout", response_model=None)
async def logout(request: Request, scope: Scope, csrf_token: Annotated[str, Form(max_length=100)] = "") -> Response:
    check_csrf(scope.principal, csrf_token)
    context = dashboard_context(request)
    assert scope.principal.session_id is not None
    async with context.sessions() as session:
        await end_session(session, session_id=scope.principal.session_id, actor=scope.principal.name,
                          tenant=scope.principal.tenant, now=context.clock.wall())
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/ui", httponly=True, samesite="lax", secure=is_https(request))
    return response
