"""Errors of the AI server, and the one place that maps them to HTTP.

    KnowledgeServiceError                  code, status_code; body {"error": code, "detail": ...}
     ├── Unauthorized                      401 unauthorized
     ├── TenantNotFound                    404 tenant_not_found
     ├── ToolNotFound                      404 tool_not_found
     ├── InvalidToolArguments              422 invalid_arguments (JSON-schema validation failed)
     └── ToolCallFailed(tool, retryable)   not an HTTP error: execute_tool answers 200 {"ok": false}
    TenantFileError                        a tenant file is invalid; the message names tenant and key

Only `install_error_handlers` knows about status codes; routes raise domain errors.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class KnowledgeServiceError(Exception):
    code = "internal_error"
    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthorized(KnowledgeServiceError):
    code = "unauthorized"
    status_code = 401


class TenantNotFound(KnowledgeServiceError):
    code = "tenant_not_found"
    status_code = 404


class ToolNotFound(KnowledgeServiceError):
    code = "tool_not_found"
    status_code = 404


class InvalidToolArguments(KnowledgeServiceError):
    code = "invalid_arguments"
    status_code = 422


class ToolCallFailed(KnowledgeServiceError):
    """A tenant tool could not produce a result; reported to the model as `{"ok": false}`.

    `retryable` says whether the same call could succeed later (timeouts, connection errors, 5xx).
    """

    code = "tool_call_failed"
    status_code = 502

    def __init__(self, tool: str, detail: str, *, retryable: bool) -> None:
        super().__init__(detail)
        self.tool = tool
        self.retryable = retryable


class TenantFileError(Exception):
    """A tenant file cannot be loaded. The message is one line naming the tenant and the key path."""


def _error_body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, request validation errors and unknown routes to `{"error", "detail"}`."""

    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, KnowledgeServiceError)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        return JSONResponse(_error_body(exc.code, exc.detail), status_code=exc.status_code, headers=headers)

    async def on_invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg")))
        return JSONResponse(_error_body("invalid_request", "; ".join(problems)), status_code=422)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(_error_body(code, str(exc.detail)), status_code=exc.status_code)

    app.add_exception_handler(KnowledgeServiceError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_invalid_request)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
