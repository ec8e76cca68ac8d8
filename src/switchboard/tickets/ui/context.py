"""What the dashboard routes share, built once in create_app(): sessions, secrets, templates, links."""

from __future__ import annotations

import base64
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.clock import Clock

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
COMET_OPIK_URL = "https://www.comet.com/opik/api"


@dataclass(frozen=True, slots=True)
class DashboardContext:
    sessions: async_sessionmaker[AsyncSession]
    """Unscoped: sign-in, API key and session lookups only."""
    scoped_sessions: async_sessionmaker[AsyncSession]
    """Tenant-scoped sessions (scope.py); every page reads through one."""
    service_token: bytes
    session_secret: str
    session_ttl_s: float
    clock: Clock
    templates: Jinja2Templates
    opik_url: str | None
    live_poll_interval_s: float = 0.5
    sign_in_attempts_per_15_min: int = 5

    def trace_url(self, trace_id: str | None) -> str | None:
        """The call's trace in Opik's UI, through the redirect the Opik SDK itself links to
        (`/v1/session/redirect/projects/?trace_id=…&path=<base64 of the API URL>`)."""
        if not trace_id or not self.opik_url:
            return None
        base = self.opik_url.rstrip("/")
        path = base64.b64encode(base.encode()).decode()
        query = urllib.parse.urlencode({"trace_id": trace_id, "path": path})
        return f"{base}/v1/session/redirect/projects/?{query}"


def opik_url_of(url_override: str | None, api_key: str | None) -> str | None:
    """Where Opik is, by Opik's own rules: its URL, or Comet's cloud when only an API key is set."""
    if url_override:
        return url_override
    return COMET_OPIK_URL if api_key else None


def dashboard_context(request: Request) -> DashboardContext:
    context: DashboardContext = request.app.state.dashboard
    return context
