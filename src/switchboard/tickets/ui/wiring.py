"""Adds the dashboard to the App server: its context, templates, static files, routes and error pages."""

from __future__ import annotations

import urllib.parse

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from switchboard.clock import Clock
from switchboard.config import AppSettings
from switchboard.logs import mask_phone, register_secret
from switchboard.tickets.errors import error_response
from switchboard.tickets.ui import present
from switchboard.tickets.ui.context import STATIC_DIR, TEMPLATES_DIR, DashboardContext, opik_url_of
from switchboard.tickets.ui.errors import Forbidden, NotFound, SignInRequired, TooManySignIns
from switchboard.tickets.ui.routes import admin, analytics, calls, integrations, live, session, tickets
from switchboard.tickets.ui.scope import TenantScopedSession, ui_principal


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    filters = {
        "clock_time": present.clock_time, "date_time": present.date_time, "offset": present.offset,
        "duration": present.duration, "money": present.money, "ms": present.milliseconds,
        "percent": present.percent, "tool_failed": present.tool_failed, "pretty_json": present.pretty_json,
        "mask_phone": mask_phone, "urlencode_query": urllib.parse.urlencode,
    }
    templates.env.filters.update(filters)
    templates.env.globals["NOT_MEASURED"] = present.NOT_MEASURED
    return templates


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    if not request.url.path.startswith("/ui/"):
        return error_response(exc.status_code, exc.error_code, exc.detail)
    target = exc.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/ui/login?" + urllib.parse.urlencode({"next": target}), status_code=303)


async def _error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotFound | Forbidden | TooManySignIns)
    if not request.url.path.startswith("/ui/"):
        return error_response(exc.status_code, exc.error_code, exc.detail)
    context: DashboardContext = request.app.state.dashboard
    principal = await ui_principal(request)
    return context.templates.TemplateResponse(
        request, "error.html", {"principal": principal, "status_code": exc.status_code, "detail": exc.detail},
        status_code=exc.status_code, headers={"Cache-Control": "no-store"},
    )


def install_dashboard(
    app: FastAPI, settings: AppSettings, *, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession],
    clock: Clock,
) -> DashboardContext:
    register_secret(settings.session_secret)
    context = DashboardContext(
        sessions=sessions,
        scoped_sessions=async_sessionmaker(engine, expire_on_commit=False, sync_session_class=TenantScopedSession),
        service_token=settings.switchboard_service_token.encode(),
        session_secret=settings.session_secret,
        session_ttl_s=settings.session_ttl_s,
        clock=clock,
        templates=_templates(),
        opik_url=opik_url_of(settings.opik_url_override, settings.opik_api_key),
    )
    app.state.dashboard = context
    for router in (session.router, calls.router, live.router, tickets.router, analytics.router, admin.router,
                   integrations.router):
        app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=str(STATIC_DIR)), name="ui-static")
    app.add_exception_handler(SignInRequired, _sign_in_required)
    for error in (NotFound, Forbidden, TooManySignIns):
        app.add_exception_handler(error, _error_page)
    return context
