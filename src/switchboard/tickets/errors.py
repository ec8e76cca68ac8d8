"""Domain errors of the App server and the one place that turns them into HTTP responses.

    AppServerError                  -> {"error": <code>, "detail": ...}
     ├── Unauthorized               401 unauthorized
     ├── MessageConflict            409 message_conflict
     ├── EndpointNotFound           404 endpoint_not_found
     └── DatabaseUnavailable        503 database_unavailable

Framework errors are folded into the same body: request validation -> 422 invalid_request,
unknown route -> 404 not_found, SQLAlchemy errors -> 503 database_unavailable. A body never
carries SQL text, parameters or a traceback: parameters can hold phone numbers and transcripts.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from switchboard.logs import get_logger

log = get_logger("switchboard.tickets")


class AppServerError(Exception):
    status_code = 500
    error_code = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthorized(AppServerError):
    status_code = 401
    error_code = "unauthorized"


class MessageConflict(AppServerError):
    """A message_id was reused for a message with a different role."""

    status_code = 409
    error_code = "message_conflict"


class EndpointNotFound(AppServerError):
    """No integration endpoint with that tenant and key."""

    status_code = 404
    error_code = "endpoint_not_found"


class DatabaseUnavailable(AppServerError):
    status_code = 503
    error_code = "database_unavailable"


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(status_code: int, error_code: str, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    return JSONResponse({"error": error_code, "detail": detail}, status_code=status_code, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    # loc and msg only: the offending input may be a phone number or a transcript.
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


async def _on_app_server_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppServerError)
    return error_response(exc.status_code, exc.error_code, exc.detail)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_request", _describe_validation(exc))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    # The exception text holds SQL and bound parameters: log its type only.
    log.error("app_server.database_error", error_type=type(exc).__name__, path=request.url.path)
    return error_response(503, "database_unavailable", "the database did not answer; retry later")


def install_error_handlers(app: FastAPI) -> None:
    handlers: dict[type[Exception], Any] = {
        AppServerError: _on_app_server_error,
        RequestValidationError: _on_validation_error,
        StarletteHTTPException: _on_http_error,
        SQLAlchemyError: _on_database_error,
    }
    for exc_class, handler in handlers.items():
        app.add_exception_handler(exc_class, handler)
