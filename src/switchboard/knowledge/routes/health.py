"""Liveness, readiness (the database answers) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from switchboard.knowledge.context import ContextDep
from switchboard.knowledge.database import ping
from switchboard.logs import get_logger

router = APIRouter()
log = get_logger(__name__)


@router.get("/health-check/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health-check/ready")
async def ready(context: ContextDep) -> JSONResponse:
    if context.engine is None:
        return JSONResponse({"error": "not_ready", "detail": "starting"}, status_code=503)
    try:
        await ping(context.engine)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log.warning("readiness.database_unavailable", error_type=type(exc).__name__)
        return JSONResponse({"error": "not_ready", "detail": "database unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics")
async def metrics(context: ContextDep) -> Response:
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)
