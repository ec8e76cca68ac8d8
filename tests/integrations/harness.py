"""The AI server and the App server, in-process, with a tenant whose integrations point at local fakes.

The AI server runs on a throwaway SQLite database (it only serves the tenant configuration here); the
App server runs on the database under test (SQLite or PostgreSQL) with its lifespan, so its delivery
worker and configuration refresh run as in production. Time is a ManualClock whose wall clock starts
at the real time (the Standard Webhooks library refuses timestamps more than 5 minutes off).
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from switchboard.clock import ManualClock
from switchboard.config import AISettings, AppSettings, load_settings
from switchboard.knowledge.app import create_app as create_ai_app
from switchboard.knowledge.database import create_engine, migrate
from switchboard.knowledge.tenant_file import parse_tenant_file
from switchboard.knowledge.tenant_loader import load_tenants
from switchboard.tickets.app import create_app as create_tickets_app
from tests.knowledge.conftest import EMBEDDER

SERVICE_TOKEN = "test-service-token-0123456789"
CALLER = "+15557654321"
PUBLIC_URL = "https://app.example.com"


def tenant_yaml(integrations: str, key: str = "acme-support", number: str = "+15551230001") -> str:
    return "tenants:\n" + textwrap.indent(
        f"- key: {key}\n  company: Acme Outdoor\n  numbers: [\"{number}\"]\n  greeting: Hello\n  credits: 100\n"
        "  integrations:\n" + textwrap.indent(textwrap.dedent(integrations).strip() + "\n", "    "),
        "  ",
    )


def webhook_entry(url: str, events: str = "[call.ended, ticket.created]", secret: str = "${ACME_WEBHOOK_SECRET}") -> str:
    return f"webhooks:\n  - url: {url}\n    secret: {secret}\n    events: {events}\n    allow_private_network: true\n"


async def load_tenant_file(ai_database_url: str, text: str, folder: Path) -> None:
    """What `switchboard tenants load` does (these tenants have no knowledge: nothing is embedded)."""
    engine = create_engine(ai_database_url)
    try:
        await migrate(engine)
        await load_tenants(engine, parse_tenant_file(text), folder, EMBEDDER, now=datetime.now(UTC))
    finally:
        await engine.dispose()


@dataclass
class Stack:
    client: httpx.AsyncClient
    clock: ManualClock
    ai_database_url: str
    folder: Path
    app: Any

    def browser(self) -> httpx.AsyncClient:
        """A client without credentials, keeping cookies, for the dashboard."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://app.test")

    def with_bearer(self, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://app.test",
                                 headers={"Authorization": f"Bearer {token}"})

    async def reload(self, text: str) -> None:
        await load_tenant_file(self.ai_database_url, text, self.folder)

    async def open_call(self, call_sid: str, *, tenant: str = "acme-support") -> None:
        started = self.clock.wall()
        response = await self.client.put(f"/api/conversations/{call_sid}", json={
            "tenant": tenant, "caller": CALLER, "started_at": started.isoformat(), "trace_id": f"trace-{call_sid}",
        })
        assert response.status_code == 201, response.text
        for seq, (role, text) in enumerate([("assistant", "Thanks for calling Acme."),
                                            ("user", "Please call me back about my refund.")]):
            response = await self.client.post(f"/api/conversations/{call_sid}/messages", json={
                "message_id": f"m{seq}", "role": role, "text": text, "at": started.isoformat(), "seq": seq,
            })
            assert response.status_code == 201, response.text

    async def create_ticket(self, call_sid: str, *, phone_number: str = CALLER) -> dict[str, Any]:
        response = await self.client.post("/api/tickets", json={
            "call_sid": call_sid, "kind": "callback", "phone_number": phone_number,
            "reason": "Refund for order 42", "requested_time": "tomorrow after 3pm",
        })
        assert response.status_code == 201, response.text
        ticket: dict[str, Any] = response.json()
        return ticket

    async def end_call(self, call_sid: str) -> None:
        response = await self.client.post(f"/api/conversations/{call_sid}/end", json={
            "end_reason": "caller_hung_up", "ended_at": self.clock.wall().isoformat(), "duration_s": 42.0,
            "usage": {"input_tokens": 10, "output_tokens": 20}, "turns": [],
        })
        assert response.status_code == 200, response.text

    async def endpoints(self) -> list[dict[str, Any]]:
        response = await self.client.get("/api/integrations/endpoints")
        assert response.status_code == 200, response.text
        endpoints: list[dict[str, Any]] = response.json()["endpoints"]
        return endpoints

    async def wait_for_endpoints(self, predicate: Any, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Poll the stats API until `predicate(endpoints)` holds."""
        async with asyncio.timeout(timeout_s):
            while True:
                endpoints = await self.endpoints()
                if predicate(endpoints):
                    return endpoints
                await asyncio.sleep(0.02)

    async def advance(self, seconds: float) -> None:
        """Once no delivery is in flight (every attempt so far recorded, so its retry is scheduled from the
        time it happened), move the App server's clock; its worker sees the new time at its next poll."""
        await self.wait_for_endpoints(lambda endpoints: all(e["in_flight"] == 0 for e in endpoints))
        self.clock.advance(seconds)
        await asyncio.sleep(0.1)


@asynccontextmanager
async def integration_stack(
    database_url: str, folder: Path, yaml_text: str, *, environ: Mapping[str, str] | None = None,
    **settings: Any,
) -> AsyncIterator[Stack]:
    ai_database_url = f"sqlite+aiosqlite:///{folder}/ai.db"
    await load_tenant_file(ai_database_url, yaml_text, folder)
    ai_app = create_ai_app(load_settings(
        AISettings, AI_DATABASE_URL=ai_database_url, SWITCHBOARD_SERVICE_TOKEN=SERVICE_TOKEN
    ))
    clock = ManualClock(wall_start=datetime.now(UTC) - timedelta(seconds=1))
    app_settings = load_settings(AppSettings, **{
        "APP_DATABASE_URL": database_url, "SWITCHBOARD_SERVICE_TOKEN": SERVICE_TOKEN,
        "AI_SERVER_URL": "http://ai.test", "SWITCHBOARD_INTEGRATIONS_REFRESH_S": 0.1,
        "SWITCHBOARD_DELIVERY_POLL_S": 0.02, "SWITCHBOARD_APP_PUBLIC_URL": PUBLIC_URL, **settings,
    })
    app = create_tickets_app(app_settings, clock=clock, environ=environ or {},
                             ai_transport=httpx.ASGITransport(app=ai_app))
    async with (
        ai_app.router.lifespan_context(ai_app),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test",
                          headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}) as client,
    ):
        yield Stack(client, clock, ai_database_url, folder, app)
