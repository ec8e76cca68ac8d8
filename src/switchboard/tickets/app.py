"""The App server's ASGI app: create_app(settings) wires routes, errors, metrics and the database.

Start-up (the lifespan) creates the SQLite folder when needed and migrates the schema to head.
Writes under /api need the service token; reads take it or a tenant API key and see that tenant only
(tickets/ui/scope.py). The dashboard lives under /ui. Probes and /metrics need nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx
import structlog
from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from switchboard.clock import Clock, SystemClock
from switchboard.config import AppSettings, ensure_sqlite_folder
from switchboard.logs import get_logger, register_secret
from switchboard.outbound_http import Resolver
from switchboard.pricing import load_price_table
from switchboard.tickets.context import AppServerContext
from switchboard.tickets.database import create_engine, create_session_factory, run_migrations
from switchboard.tickets.errors import install_error_handlers
from switchboard.tickets.integrations.service import IntegrationsService
from switchboard.tickets.metrics import AppServerMetrics
from switchboard.tickets.routes import conversations, health, integrations, tickets
from switchboard.tickets.ui.wiring import install_dashboard

log = get_logger("switchboard.tickets")


class RequestObservation:
    """ASGI middleware: binds request_id to the request's log lines, echoes it, and counts requests."""

    def __init__(self, app: ASGIApp, *, metrics: AppServerMetrics, clock: Clock) -> None:
        self.app = app
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw_request_id = headers.get(b"x-request-id", b"")[:100].decode("latin-1")
        request_id = raw_request_id if raw_request_id.isprintable() and raw_request_id else uuid.uuid4().hex
        started_s = self.clock.now()
        status_code = 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            with structlog.contextvars.bound_contextvars(request_id=request_id):
                await self.app(scope, receive, send_with_request_id)
        finally:
            route = scope.get("route")
            # The template, not the path: call_sids in labels would grow the registry without bound.
            route_label = route.path if isinstance(route, Route) else "unmatched"
            self.metrics.http_requests.labels(
                method=scope["method"], route=route_label, status=str(status_code)
            ).inc()
            self.metrics.http_request_duration.labels(route=route_label).observe(self.clock.now() - started_s)


def create_app(
    settings: AppSettings, *, clock: Clock | None = None, environ: Mapping[str, str] | None = None,
    resolver: Resolver | None = None, ai_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the App server. Nothing touches the database until the lifespan starts.

    `environ` feeds `${VAR}` in tenants' integrations (default: this process's environment, read when
    sending); `resolver` resolves their host names; `ai_transport` reaches the AI server in-process."""
    register_secret(settings.switchboard_service_token)
    clock = clock or SystemClock()
    engine = create_engine(settings.app_database_url)
    sessions = create_session_factory(engine)
    metrics = AppServerMetrics()
    integrations_service = IntegrationsService.build(
        settings, sessions=sessions, clock=clock, registry=metrics.registry,
        environ=environ if environ is not None else os.environ, resolver=resolver, ai_transport=ai_transport,
    )
    context = AppServerContext(
        engine=engine,
        sessions=sessions,
        metrics=metrics,
        clock=clock,
        service_token=settings.switchboard_service_token.encode(),
        prices=load_price_table(),
        price_model=settings.openai_realtime_model,
        integrations=integrations_service,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            ensure_sqlite_folder(settings.app_database_url)
            await run_migrations(engine)
            log.info("app_server.started", database=engine.dialect.name)
            async with integrations_service.running():
                yield
        finally:
            await engine.dispose()
            log.info("app_server.stopped")

    app = FastAPI(title="Switchboard App server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.context = context
    install_error_handlers(app)
    app.include_router(health.router)
    # Writes need the service token, reads a tenant scope: each route says which (see routes/).
    app.include_router(conversations.router)
    app.include_router(tickets.router)
    app.include_router(integrations.router)
    install_dashboard(app, settings, engine=engine, sessions=context.sessions, clock=clock)
    app.add_middleware(RequestObservation, metrics=context.metrics, clock=clock)
    # Outermost: a trusted proxy's X-Forwarded-Proto/-For set the scheme and client every route sees.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted_proxies(settings.trusted_proxies))
    return app


def trusted_proxies(setting: str) -> list[str]:
    """SWITCHBOARD_TRUSTED_PROXIES as uvicorn's proxy-headers middleware takes it (empty: trust none)."""
    return [item.strip() for item in setting.split(",") if item.strip()]
