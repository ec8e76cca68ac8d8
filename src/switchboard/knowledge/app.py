"""`create_app(settings)`: the AI server's ASGI app (tenants, knowledge, tools) and its lifespan.

The lifespan migrates the schema, opens the database engine and the tools' HTTP client, and closes
both. Nothing is cached between requests: every request reads the database.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, Response

from switchboard.clock import Clock, SystemClock
from switchboard.config import AISettings
from switchboard.knowledge.context import AIContext, require_service_token
from switchboard.knowledge.database import create_engine, migrate, sessionmaker
from switchboard.knowledge.errors import install_error_handlers
from switchboard.knowledge.metrics import AIMetrics
from switchboard.knowledge.routes import charges, health, integrations, knowledge, tenants, tools
from switchboard.knowledge.tool_http import build_tool_http_client
from switchboard.logs import get_logger

log = get_logger(__name__)
CLOSE_TIMEOUT_S = 5.0


def create_app(
    settings: AISettings, *, clock: Clock | None = None, environ: Mapping[str, str] | None = None
) -> FastAPI:
    """The AI server. `clock` decides "now" for business hours; `environ` feeds ${VAR} in tool headers
    (default: this process's environment, read when a tool runs)."""
    context = AIContext(
        service_token=settings.switchboard_service_token,
        clock=clock or SystemClock(),
        metrics=AIMetrics(),
        environ=environ if environ is not None else os.environ,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.ai_database_url)
        try:
            await migrate(engine)
            context.engine = engine
            context.sessions = sessionmaker(engine)
            context.http_client = build_tool_http_client()
            log.info("ai_server.started", database=engine.url.get_backend_name())
            yield
        finally:
            if context.http_client is not None:
                await context.http_client.aclose()
                context.http_client = None
            context.engine = None
            context.sessions = None
            await engine.dispose()
            log.info("ai_server.stopped")

    app = FastAPI(title="Switchboard AI server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.context = context
    install_error_handlers(app)

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            response = await call_next(request)
        # No route of this app has path parameters, so a matched path is a bounded label.
        route_path = request.url.path if request.scope.get("route") is not None else "unmatched"
        context.metrics.requests.labels(route=route_path, method=request.method, status=str(response.status_code)).inc()
        context.metrics.request_duration.labels(route=route_path).observe(time.perf_counter() - started)
        response.headers["X-Request-ID"] = request_id
        return response

    app.include_router(health.router)
    voiceagent = APIRouter(prefix="/voiceagent", dependencies=[Depends(require_service_token)])
    voiceagent.include_router(tenants.router)
    voiceagent.include_router(tools.router)
    voiceagent.include_router(knowledge.router)
    voiceagent.include_router(charges.router)
    voiceagent.include_router(integrations.router)
    app.include_router(voiceagent)
    return app
