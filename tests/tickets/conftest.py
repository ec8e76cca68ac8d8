"""The real App server on a throwaway database (SQLite file and PostgreSQL), driven in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from tests.tickets.harness import SERVICE_TOKEN, AppServer, build_app

from switchboard.clock import ManualClock


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
