"""Unauthenticated probes and metrics: /health-check/live, /health-check/ready, /metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from switchboard.logs import get_logger
from switchboard.tickets.context import AppServerContext
from switchboard.tickets.database import check_database
from switchboard.tickets.errors import error_response
from switchboard.tickets.routes.dependencies import app_context

log = get_logger("switchboard.tickets")
router = APIRouter(tags=["health"])

Context = Annotated[AppServerContext, Depends(app_context)]


@router.get("/health-check/live")
async def live() -> dict[str, str]:
    """200 while the process is up."""
    return {"status": "live"}


@router.get("/health-check/ready", response_model=None)
async def ready(context: Context) -> JSONResponse:
    """200 while the database answers, 503 otherwise."""
    try:
        await check_database(context.engine)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log.warning("app_server.not_ready", error_type=type(exc).__name__)
        return error_response(503, "database_unavailable", "the database did not answer")
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(context: Context) -> Response:
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)
