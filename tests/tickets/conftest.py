"""The real App server on a throwaway database (SQLite file and PostgreSQL), driven in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from tests.tickets.dashboard_data import USERS, Dashboard, add_user, seed_calls
from tests.tickets.harness import SERVICE_TOKEN, AppServer, build_app

from switchboard.clock import ManualClock
from switchboard.config import AppSettings, load_settings
from switchboard.tickets import create_app


@pytest.fixture
async def app_server(database_url: str) -> AsyncIterator[AppServer]:
    clock = ManualClock()
    app = build_app(database_url, clock)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://app.test", headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}
        ) as client,
        httpx.AsyncClient(transport=transport, base_url="http://app.test") as anonymous,
    ):
        yield AppServer(app=app, client=client, anonymous=anonymous, clock=clock)


@pytest.fixture
async def dashboard(database_url: str) -> AsyncIterator[Dashboard]:
    """The App server with the dashboard's seed: two tenants' calls, users of every role and API keys."""
    clock = ManualClock(wall_start=datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    settings = load_settings(
        AppSettings, APP_DATABASE_URL=database_url, SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN,
        SWITCHBOARD_SESSION_SECRET="test-session-secret-0123456789", OPIK_URL_OVERRIDE="http://opik.test/api",
    )
    app = create_app(settings, clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=transport, base_url="http://app.test", headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}
    ) as service:
        seeded = await seed_calls(service)
        engine = app.state.context.engine
        for email, tenant, role in USERS:
            await add_user(engine, email, tenant, role)
        yield Dashboard(app=app, transport=transport, service=service, seeded=seeded, engine=engine, clock=clock)
