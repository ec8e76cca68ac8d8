"""Shared by the dashboard's routes: rendering, CSRF checks, cookies, the client's address."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from switchboard.tickets.ui.auth import Principal
from switchboard.tickets.ui.context import dashboard_context
from switchboard.tickets.ui.errors import Forbidden


def render(request: Request, template: str, principal: Principal | None, status_code: int = 200,
           **values: Any) -> HTMLResponse:
    context = dashboard_context(request)
    return context.templates.TemplateResponse(
        request, template, {"principal": principal, **values}, status_code=status_code,
        headers={"Cache-Control": "no-store"},
    )


def check_csrf(principal: Principal, submitted: str) -> None:
    """Raises: Forbidden unless the form carries the session's CSRF token."""
    expected = principal.csrf_token or ""
    if not expected or not hmac.compare_digest(submitted.encode(), expected.encode()):
        raise Forbidden("the form was not sent from this dashboard (CSRF token missing or wrong); reload the page")


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def client_ip(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"
